"""Storage failures become job errors fit for the job's owner."""

from __future__ import annotations

import pytest

from mutate.common import errors
from mutate.transformer.faults import PermanentFault, TransientFault, faults_of

KEY = "input/org_1/job_9/quarterly report.csv"


def test_a_refused_input_names_the_file_not_its_key() -> None:
    refusal = errors.FailedPrecondition(
        f"object {KEY!r} is 300 bytes, over the requested limit of 200"
    )
    with pytest.raises(PermanentFault) as caught, faults_of("input"):
        raise refusal

    assert caught.value.code == "LIMIT_EXCEEDED"
    assert "input/" not in caught.value.message
    assert caught.value.message == (
        "reading the input: the input file is 300 bytes, over the requested "
        "limit of 200"
    )
    # Operators still find the key on the fault's cause (the worker logs it).
    assert caught.value.__cause__ is refusal


def test_an_unreachable_store_keeps_its_reason_without_the_key() -> None:
    with pytest.raises(TransientFault) as caught, faults_of("output"):
        raise errors.Unavailable(
            "object 'output/org_1/job_9/result.csv' could not be stored: "
            "store unreachable"
        )

    assert caught.value.code == "STORAGE_UNAVAILABLE"
    assert caught.value.message == (
        "storing the output: the output file could not be stored: store unreachable"
    )
