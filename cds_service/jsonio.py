"""Flask's JSON provider on orjson: the same JSON out, written several times faster than the stdlib."""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask import Response
from flask.json.provider import JSONProvider


class OrjsonProvider(JSONProvider):
    """Compact UTF-8 JSON, keys in insertion order; falls back to the stdlib for what orjson refuses."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """`obj` as a JSON string."""
        return self._bytes(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON text (strict RFC 8259: no NaN or Infinity)."""
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """A JSON response of `args` / `kwargs`, as `flask.jsonify` documents."""
        body = self._bytes(self._prepare_response_obj(args, kwargs))
        return Response(body, mimetype="application/json")

    @staticmethod
    def _bytes(obj: Any) -> bytes:
        try:
            return orjson.dumps(obj)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            # Lone surrogates or integers past 64 bits in some echoed value: the stdlib writes them.
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()
