"""What the bench writes down about the machine."""
import re

from bench.machine import sha256_rate
from bench.report import machine_lines


def test_the_machine_section_names_one_cores_sha256_rate():
    rate = sha256_rate()
    assert re.fullmatch(r"[1-9]\d* MB/s", rate)
    assert machine_lines({"cpus": 2, "sha256_per_core": rate}) == [
        "- CPUs (nproc): 2", f"- SHA-256 on one core: {rate}"]
