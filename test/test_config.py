"""Configuration: TOML, then SECURIFILE_* variables, then explicit overrides; then validation."""
from pathlib import Path

import pytest

from securifile.common.config import Config, ServerEntry, dump_config, load_config

TOML = """
replicas = 1
digest = "sha512"
heartbeat_interval = 0.5
heartbeat_misses = 4
tls = true
data_dir = "var"
certs_dir = "secrets/certs"
admin_url = "https://127.0.0.1:8440"

[[servers]]
name = "n1"
url = "https://127.0.0.1:8441"

[[servers]]
name = "n2"
url = "https://127.0.0.1:8442"

[[servers]]
name = "n3"
url = "https://[::1]:8443"
"""


@pytest.fixture
def toml_file(tmp_path):
    path = tmp_path / "etc" / "cluster.toml"
    path.parent.mkdir()
    path.write_text(TOML)
    return path


def test_defaults_without_any_source():
    cfg = load_config(env={})
    assert cfg == Config()
    assert cfg.replicas == 1 and cfg.tls is True and cfg.digest == "sha256"
    assert cfg.heartbeat_interval == 1.0 and cfg.heartbeat_misses == 3
    assert cfg.scheme == "https"


def test_toml_file_is_read_into_typed_values(toml_file):
    cfg = load_config(toml_file, env={})
    assert cfg.servers == [ServerEntry("n1", "https://127.0.0.1:8441"),
                           ServerEntry("n2", "https://127.0.0.1:8442"),
                           ServerEntry("n3", "https://[::1]:8443")]
    assert cfg.digest == "sha512"
    assert cfg.heartbeat_interval == 0.5 and isinstance(cfg.heartbeat_interval, float)
    assert cfg.heartbeat_misses == 4
    assert cfg.admin_url == "https://127.0.0.1:8440"
    assert cfg.server("n3").host == "::1" and cfg.server("n3").port == 8443
    assert cfg.server("n1").host == "127.0.0.1" and cfg.server("n1").port == 8441
    with pytest.raises(KeyError):
        cfg.server("n9")


def test_relative_folders_in_the_file_are_relative_to_the_file(toml_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # somewhere else than the file's folder
    cfg = load_config(toml_file, env={})
    assert cfg.data_dir == toml_file.parent / "var"
    assert cfg.certs_dir == toml_file.parent / "secrets" / "certs"
    assert cfg.node_data_dir("n2").is_relative_to(toml_file.parent / "var")


def test_folders_left_at_their_defaults_are_relative_to_the_file(tmp_path):
    path = tmp_path / "minimal.toml"
    path.write_text("replicas = 0\n")
    cfg = load_config(path, env={})
    assert cfg.data_dir == tmp_path / "var" and cfg.certs_dir == tmp_path / "certs"


def test_absolute_folders_in_the_file_stay_as_they_are(tmp_path):
    path = tmp_path / "abs.toml"
    path.write_text(f'data_dir = "{tmp_path / "elsewhere"}"\n')
    assert load_config(path, env={}).data_dir == tmp_path / "elsewhere"


def test_relative_folders_from_env_or_flags_are_not_moved_under_the_file(toml_file):
    cfg = load_config(toml_file, env={"SECURIFILE_DATA_DIR": "from-env"},
                      overrides={"certs_dir": "from-flag"})
    assert cfg.data_dir == Path("from-env")
    assert cfg.certs_dir == Path("from-flag")


def test_environment_beats_the_file_and_overrides_beat_both(toml_file):
    env = {"SECURIFILE_REPLICAS": "2", "SECURIFILE_DIGEST": "sha3-256", "SECURIFILE_TLS": "false",
           "SECURIFILE_HEARTBEAT_MISSES": "7", "UNRELATED": "x", "SECURIFILE_": "ignored"}
    cfg = load_config(toml_file, env=env)
    assert (cfg.replicas, cfg.digest, cfg.tls, cfg.heartbeat_misses) == (2, "sha3-256", False, 7)
    assert cfg.heartbeat_interval == 0.5  # untouched by the environment
    assert cfg.scheme == "http"
    cfg = load_config(toml_file, env=env,
                      overrides={"replicas": 0, "tls": True, "digest": None})
    assert cfg.replicas == 0          # override beats env
    assert cfg.tls is True
    assert cfg.digest == "sha3-256"   # a None override means "not given"


@pytest.mark.parametrize("text, expected", [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True), (" on ", True),
    ("0", False), ("false", False), ("no", False), ("off", False), ("", False)])
def test_booleans_from_the_environment(text, expected):
    assert load_config(env={"SECURIFILE_TLS": text}).tls is expected


def test_servers_from_an_environment_string(toml_file):
    env = {"SECURIFILE_SERVERS": " a=http://127.0.0.1:9001 , b=http://127.0.0.1:9002,",
           "SECURIFILE_REPLICAS": "1"}
    cfg = load_config(env=env)
    assert cfg.servers == [ServerEntry("a", "http://127.0.0.1:9001"),
                           ServerEntry("b", "http://127.0.0.1:9002")]
    assert cfg.server("b").port == 9002
    # The environment replaces the file's list, it does not add to it.
    assert [s.name for s in load_config(toml_file, env=env).servers] == ["a", "b"]


def test_servers_from_overrides():
    cfg = load_config(env={}, overrides={"servers": [{"name": "x", "url": "http://h:1"},
                                                      {"name": "y", "url": "http://h:2"}]})
    assert [s.name for s in cfg.servers] == ["x", "y"]


@pytest.mark.parametrize("env, message", [
    ({"SECURIFILE_SERVERS": "a=http://h:1,b=http://h:2", "SECURIFILE_REPLICAS": "2"},
     "replicas must be between 0 and n-1 = 1"),
    ({"SECURIFILE_SERVERS": "a=http://h:1,b=http://h:2", "SECURIFILE_REPLICAS": "-1"},
     "replicas must be between"),
    ({"SECURIFILE_SERVERS": "a=http://h:1,a=http://h:2", "SECURIFILE_REPLICAS": "1"},
     "server names must be unique"),
    ({"SECURIFILE_DIGEST": "md5"}, "unknown digest algorithm"),
    ({"SECURIFILE_DIGEST": "SHA256"}, "unknown digest algorithm"),
    ({"SECURIFILE_HEARTBEAT_INTERVAL": "0"}, "heartbeat interval"),
    ({"SECURIFILE_HEARTBEAT_MISSES": "0"}, "heartbeat interval"),
])
def test_invalid_values_are_refused(env, message):
    with pytest.raises(ValueError, match=message):
        load_config(env=env)


def test_replicas_up_to_n_minus_one_are_accepted():
    env = {"SECURIFILE_SERVERS": "a=http://h:1,b=http://h:2,c=http://h:3", "SECURIFILE_REPLICAS": "2"}
    assert load_config(env=env).replicas == 2


def test_unknown_keys_are_refused(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("replica = 2\nheartbeat_intervall = 1.0\n")
    with pytest.raises(ValueError, match=r"unknown configuration keys: \['heartbeat_intervall', 'replica'\]"):
        load_config(path, env={})
    with pytest.raises(ValueError, match="unknown configuration keys"):
        load_config(env={}, overrides={"no_such_setting": 1})


def test_dump_config_round_trips(tmp_path):
    cfg = Config(
        servers=[ServerEntry("n1", "https://127.0.0.1:8441"), ServerEntry("n2", "https://[::1]:8442"),
                 ServerEntry("n3", "http://localhost:8443")],
        replicas=2, tls=False, certs_dir=tmp_path / 'we"ird\\certs', data_dir=tmp_path / "data",
        digest="sha1", heartbeat_interval=0.2, heartbeat_misses=5, peer_timeout=2.5,
        capacity_bytes=123456789, max_body_bytes=1 << 40, admin_url="http://127.0.0.1:8440",
        admin_urls=["http://127.0.0.1:8440", "http://127.0.0.2:8440"],
        syslog_targets=["127.0.0.1:8514", "[::1]:8515"],
    )
    path = tmp_path / "dumped.toml"
    path.write_text(dump_config(cfg))
    assert load_config(path, env={}) == cfg


def test_dumped_relative_folders_load_relative_to_the_file(tmp_path):
    path = tmp_path / "sub" / "dumped.toml"
    path.parent.mkdir()
    path.write_text(dump_config(Config(data_dir=Path("var"), certs_dir=Path("certs"))))
    cfg = load_config(path, env={})
    assert cfg.data_dir == path.parent / "var" and cfg.certs_dir == path.parent / "certs"


def test_repair_after_comes_from_the_environment_and_is_checked(tmp_path):
    assert load_config(env={"SECURIFILE_REPAIR_AFTER": "42"}).repair_after == 42.0
    with pytest.raises(ValueError, match="repair_after"):
        load_config(env={"SECURIFILE_REPAIR_AFTER": "-1"})


def test_several_admin_instances_and_syslog_receivers(tmp_path):
    cfg = load_config(env={"SECURIFILE_ADMIN_URLS": "https://a:8440/, https://b:8440",
                           "SECURIFILE_SYSLOG_TARGETS": "a:8514,[::1]:8515"})
    assert cfg.admin_url == "https://a:8440/"  # the first, when none is given
    assert cfg.admin_endpoints == ["https://a:8440", "https://b:8440"]
    assert cfg.syslog_endpoints() == [("a", 8514), ("::1", 8515)]
    # An instance's own URL comes first; the receivers default to the admin hosts.
    second = load_config(env={}, overrides={"admin_url": "https://b:8440", "syslog_port": 9,
                                            "admin_urls": ["https://a:8440", "https://b:8440"]})
    assert second.admin_endpoints == ["https://b:8440", "https://a:8440"]
    assert second.syslog_endpoints() == [("b", 9), ("a", 9)]
    with pytest.raises(ValueError, match="host:port"):
        load_config(env={"SECURIFILE_SYSLOG_TARGETS": "nohost"})
