"""The request log: queued lines reach the log in order, a batch in one write, nothing lost."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from cds_service.logs import JsonFormatter, JsonLinesHandler, RequestLog


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, CountingStream]]:
    stream = CountingStream()
    handler = JsonLinesHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("cds_service.test-request-log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_a_batch_of_request_lines_is_one_write_in_order(
    logger: tuple[logging.Logger, CountingStream],
) -> None:
    log, stream = logger
    requests = RequestLog(log, interval=60)  # no background flush during the test
    for status in (200, 400, 503):
        requests.write({"route": "/cds-services/<service_id>", "status": status})

    requests.flush()

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["status"] for line in lines] == [200, 400, 503]
    assert {line["message"] for line in lines} == {"request"}
    assert stream.writes == 1


def test_other_lines_are_written_at_once_and_kept_during_a_batch(
    logger: tuple[logging.Logger, CountingStream],
) -> None:
    log, stream = logger
    handler = log.handlers[0]
    assert isinstance(handler, JsonLinesHandler)

    log.warning("outside a batch")
    assert stream.writes == 1  # not held back

    with handler.batched():
        log.info("first")
        other = threading.Thread(target=log.warning, args=("from another thread",))
        other.start()
        other.join()
        assert stream.writes == 1  # held until the batch ends
    messages = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert messages == ["outside a batch", "first", "from another thread"]
    assert stream.writes == 2
