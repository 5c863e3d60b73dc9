"""The repository stays small enough for the accelerator: every device call carries the whole
working tree plus the data pieces and wheels within 64 MiB, so the tracked files must leave room
(a ResNet-50 weights file, 95 MB, belongs on the Hugging Face Hub, not in weights/)."""

import subprocess

import pytest

from tests.helpers import REPO_ROOT

LIMIT_MIB = 40  # leaves at least 24 MiB per call for dataset pieces and the wheels (7 MiB)


def test_tracked_files_leave_room_for_data_in_a_device_call():
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True,
                                 check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [REPO_ROOT / f for f in listing.decode().split("\0") if f]
    sizes = {f: f.stat().st_size for f in files if f.is_file()}
    total = sum(sizes.values()) / 2**20
    largest = sorted(sizes, key=sizes.get, reverse=True)[:3]
    assert total < LIMIT_MIB, (f"tracked files total {total:.1f} MiB (limit {LIMIT_MIB}); largest: "
                               + ", ".join(f"{f.relative_to(REPO_ROOT)} {sizes[f] / 2**20:.1f} MiB" for f in largest))
