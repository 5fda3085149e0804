"""open_store: which backend a URL opens, and one clear ConfigError line for bad URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from booktape.errors import ConfigError
from booktape.stores import LocalStore, MemoryStore, S3Config, S3Store, clear_shared, open_store

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _no_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("file:///data/booktape", "/data/booktape"),
        ("file://localhost/data/booktape", "/data/booktape"),
        ("file:///data/with%20space", "/data/with space"),
        ("/data/booktape", "/data/booktape"),
        ("/data/booktape/", "/data/booktape"),
    ],
)
def test_paths_and_file_urls_open_a_local_store(url: str, root: str) -> None:
    store = open_store(url)

    assert isinstance(store, LocalStore)
    assert store.root == Path(root)
    assert store.url == Path(root).as_uri()


def test_a_relative_path_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    store = open_store("store-dir")

    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "store-dir"


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://my-bucket", "my-bucket", ""),
        ("s3://my-bucket/", "my-bucket", ""),
        ("s3://my-bucket/booktape/prod", "my-bucket", "booktape/prod"),
        ("s3://my.bucket.name/p/", "my.bucket.name", "p"),
    ],
)
def test_s3_urls_open_an_s3_store_without_io(url: str, bucket: str, prefix: str) -> None:
    store = open_store(url)

    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == (bucket, prefix)
    assert store.endpoint_url is None
    assert store.path_style is False  # virtual-hosted style on AWS


def test_an_explicit_endpoint_defaults_to_path_style() -> None:
    store = open_store("s3://b-1/p", s3_endpoint_url="http://127.0.0.1:9000")

    assert isinstance(store, S3Store)
    assert store.endpoint_url == "http://127.0.0.1:9000"
    assert store.path_style is True


def test_path_style_can_be_chosen_explicitly() -> None:
    store = open_store("s3://b-1/p", s3_endpoint_url="https://s3.example.com", s3_path_style=False)

    assert isinstance(store, S3Store)
    assert store.path_style is False


def test_the_endpoint_comes_from_the_environment_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-env:9000")

    from_env = open_store("s3://b-1")
    explicit = open_store("s3://b-1", s3_endpoint_url="http://explicit:9000")

    assert isinstance(from_env, S3Store)
    assert isinstance(explicit, S3Store)
    assert from_env.endpoint_url == "http://from-env:9000"
    assert from_env.path_style is True
    assert explicit.endpoint_url == "http://explicit:9000"


def test_s3_settings_are_passed_through() -> None:
    config = S3Config(multipart_threshold=8 * MiB, part_size=5 * MiB, list_page_size=10)

    store = open_store("s3://b-1", s3_config=config)

    assert isinstance(store, S3Store)
    assert store.config is config


async def test_memory_urls_share_objects_by_name() -> None:
    first, second, other = (
        open_store("memory://shared"),
        open_store("memory://shared"),
        open_store("memory://other"),
    )
    try:
        await first.put("k", b"v")

        assert isinstance(first, MemoryStore)
        assert await second.get("k") == b"v"
        assert await other.head("k") is None
    finally:
        clear_shared()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty store URL"),
        ("   ", "empty store URL"),
        ("gs://bucket/x", "unsupported store URL scheme 'gs'"),
        ("http://host/x", "unsupported store URL scheme 'http'"),
        ("s3://", "not a valid bucket name"),
        ("s3://Bad_Bucket/x", "not a valid bucket name"),
        ("s3://b-1/a b", "bad prefix"),
        ("s3://b-1/../x", "bad prefix"),
        ("s3://b-1/.tmp", "bad prefix"),
        ("s3://b-1/x?versionId=1", "must not have a query"),
        ("file://otherhost/data", "no host"),
        ("file:relative", "lacks '//'"),
        ("s3:bucket/x", "lacks '//'"),
        ("bad\npath", "invalid store path"),
        ("memory://bad name", "memory store names"),
    ],
)
def test_bad_urls_are_one_line_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        open_store(url)

    assert "\n" not in str(caught.value)


def test_credentials_in_a_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError, match="must not contain credentials") as caught:
        open_store("s3://AKIAEXAMPLE:s3cr3t@my-bucket/prefix")

    assert "s3cr3t" not in str(caught.value)
    assert "AKIAEXAMPLE" not in str(caught.value)


@pytest.mark.parametrize("endpoint", ["ftp://host", "127.0.0.1:9000", "http://user:pw@host"])
def test_a_bad_endpoint_is_a_config_error(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="invalid S3 endpoint URL") as caught:
        open_store("s3://b-1", s3_endpoint_url=endpoint)

    assert "pw" not in str(caught.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"part_size": 4 * MiB},
        {"multipart_threshold": MiB},
        {"list_page_size": 0},
        {"list_page_size": 1001},
        {"connect_timeout_s": 0.0},
    ],
)
def test_bad_s3_settings_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        S3Config(**kwargs)  # type: ignore[arg-type]
