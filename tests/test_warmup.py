"""The master's warm-up (cds_service.app.warm_up): what each worker's first call would build."""

from __future__ import annotations

from cds_service import units
from cds_service.app import warm_up
from cds_service.protocol import schemas


def test_warm_up_builds_the_schema_validators_and_the_unit_registry() -> None:
    for cached in (units._build_registry, units._parse, units._conversion):
        cached.cache_clear()  # conversions made by earlier tests would not need the registry
    schemas._validator.cache_clear()
    warm_up()
    assert units._build_registry.cache_info().currsize == 1
    assert schemas._validator.cache_info().currsize == len(schemas.SCHEMA_NAMES)
