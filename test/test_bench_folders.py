"""The bench's folder figure: our CLI puts a folder and gets it back at each --parallel
setting against a real cluster, and the report sets the rates beside vsftpd's."""
import argparse
import os
import sys
from pathlib import Path

import pytest

from bench.folders import _same_files, folder_transfers, parallel_settings
from bench.measure import BenchError
from bench.report import folder_table
from securifile.client.storage import Client

CLI = Path(sys.executable).with_name("securifile")


def test_a_folder_goes_up_and_comes_back_whole_at_each_setting(cluster, tmp_path):
    (tmp_path / "small").mkdir()
    paths = []
    for i in range(12):
        path = tmp_path / "small" / f"{i:04d}.bin"
        path.write_bytes(os.urandom(4096))
        paths.append(str(path))
    said = []
    figures = folder_transfers(str(CLI), cluster, paths, [1, 3], str(tmp_path / "work"),
                               timeout_s=120, log=said.append)
    assert (figures["files"], figures["size"]) == (12, 4096)
    assert sorted(figures["parallel"]) == [1, 3]
    assert all(r["put_per_s"] > 0 and r["get_per_s"] > 0 for r in figures["parallel"].values())
    client = Client([cluster.url(n) for n in cluster.names], ca=str(cluster.layout.ca_cert),
                    cert=cluster.user["cert"], key=cluster.user["key"])
    with client:
        stored = client.list("alice/")
    folders = {r["path"].split("/")[0] for r in stored}
    assert len(folders) == 2 and all(f.startswith("folder-p") for f in folders)
    assert len(stored) == 24
    assert not (tmp_path / "work" / "folder").exists()  # its scratch copies are gone
    assert len(said) == 2 and said[1].startswith("securifile r=1 folder of 12 files, 3 at a")


def test_folder_settings_are_one_to_sixteen():
    assert parallel_settings("1,4") == [1, 4] and parallel_settings("") == []
    for bad in ("0", "17", "x", "1,,y"):
        with pytest.raises(argparse.ArgumentTypeError):
            parallel_settings(bad)


def test_a_file_that_comes_back_different_fails_the_figure(tmp_path):
    for side in ("folder", "back"):
        (tmp_path / side).mkdir()
        (tmp_path / side / "a.bin").write_bytes(b"same")
    _same_files(tmp_path / "folder", tmp_path / "back")
    (tmp_path / "back" / "a.bin").write_bytes(b"diff")
    with pytest.raises(BenchError, match="came back different"):
        _same_files(tmp_path / "folder", tmp_path / "back")


def test_the_report_sets_our_folder_rates_beside_vsftpds_one_session():
    systems = {  # as read back from a results file: the settings are strings there
        "vsftpd": {"small_per_s": 200.0},
        "securifile r=2": {"folder": {"files": 200, "size": 4096, "parallel": {
            "1": {"put_per_s": 100.0, "get_per_s": 150.0},
            "4": {"put_per_s": 150.0, "get_per_s": 210.0}}}},
    }
    head, rule, row = folder_table(systems)
    assert head.count("at a time") == 4 and rule.count("---") == 8
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["SecuriFile 3 nodes, r=2", "200 x 4K", "100", "0.50x", "150", "0.75x",
                     "150", "210"]
    assert folder_table({"vsftpd": {"small_per_s": 200.0}}) == []
