"""One contract for every Store backend (local, memory, rclone-s3, moto-s3), then the
behaviour specific to each: local atomicity, memory faults, S3 integrity/errors/retries."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import errno
import hashlib
import logging
import os
import random
import sys
import threading
import time
from pathlib import Path

import pytest

from booktape.errors import (
    InvalidNameError,
    ObjectNotFoundError,
    StoreAccessError,
    StoreError,
    StoreIntegrityError,
    StoreUnavailableError,
)
from booktape.stores import LocalStore, MemoryStore, RetryPolicy, S3Config, S3Store, Store
from booktape.stores.base import oserror_to_store_error
from booktape.stores.local import ETAG_XATTR
from booktape.stores.s3 import multipart_etag
from tests.integration.conftest import (
    CLOSED_ENDPOINT,
    SECRET_KEY,
    Fault,
    FaultProxy,
    S3Server,
    StoreMaker,
    free_port,
)

MiB = 1024 * 1024
FAST_RETRY = RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.02)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


async def keys_of(store: Store, prefix: str = "") -> list[str]:
    return [info.key async for info in store.list(prefix)]


# --- the contract --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [bytes(range(256)) * 4, b"", random.Random(7).randbytes(5 * 1000 * 1000)],
    ids=["binary", "empty", "5MB"],
)
async def test_put_then_get_returns_the_same_bytes(store: Store, data: bytes) -> None:
    info = await store.put("raw/x/obj.bin", data)

    assert await store.get("raw/x/obj.bin") == data
    assert (info.key, info.size, info.etag) == ("raw/x/obj.bin", len(data), md5_hex(data))
    head = await store.head("raw/x/obj.bin")
    assert head is not None
    assert (head.size, head.etag) == (len(data), md5_hex(data))
    assert head.last_modified_ns is not None


async def test_keys_may_use_every_allowed_character(store: Store) -> None:
    key = "date=2024-01-02/Region_eu.c-1/09.30.00-1-2.jsonl.zst"

    await store.put(key, b"x")

    assert await keys_of(store) == [key]


async def test_put_overwrites_the_whole_object(store: Store) -> None:
    await store.put("k", b"first version, longer")

    await store.put("k", b"second")

    assert await store.get("k") == b"second"
    head = await store.head("k")
    assert head is not None
    assert head.size == 6


async def test_head_of_a_missing_key_is_none(store: Store) -> None:
    await store.put("present", b"x")

    assert await store.head("absent") is None
    assert await store.head("present/child") is None


async def test_get_of_a_missing_key_raises_object_not_found(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError):
        await store.get("no/such/key")
    with pytest.raises(ObjectNotFoundError):
        await store.get_file("no/such/key", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


async def test_list_is_sorted_and_limited_to_the_prefix(store: Store) -> None:
    keys = ["raw/a-c", "raw/d/b", "raw/a0", "raw/a.b", "raw/A", "raw/d/b0/c", "raw/d/a",
            "raw/ab", "raw/d-", "raw/d0", "rawx/1", "canonical/z", "r"]  # fmt: skip
    for key in random.Random(1).sample(keys, len(keys)):
        await store.put(key, key.encode())

    assert await keys_of(store, "raw/") == sorted(k for k in keys if k.startswith("raw/"))
    assert await keys_of(store, "raw/d") == ["raw/d-", "raw/d/a", "raw/d/b", "raw/d/b0/c", "raw/d0"]
    assert await keys_of(store) == sorted(keys)
    assert await keys_of(store, "nothing/") == []
    infos = {info.key: info async for info in store.list("raw/d/")}
    assert infos["raw/d/b0/c"].size == len(b"raw/d/b0/c")
    assert infos["raw/d/b0/c"].etag == md5_hex(b"raw/d/b0/c")


async def test_list_follows_pages(make_store: StoreMaker) -> None:
    store = make_store(S3Config(list_page_size=7))
    keys = [f"p/{i:03d}" for i in range(40)]
    await asyncio.gather(*(store.put(k, b"v") for k in keys))
    await store.put("q/outside", b"v")

    assert await keys_of(store, "p/") == keys


@pytest.mark.parametrize("make_s3_store", ["rclone", "moto"], indirect=True)
async def test_list_returns_more_than_the_servers_1000_key_page(
    make_s3_store: StoreMaker,
) -> None:
    store = make_s3_store(S3Config(max_pool_connections=32))
    keys = [f"many/{i:04d}" for i in range(1001)]
    gate = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with gate:
            await store.put(key, b"")

    await asyncio.gather(*(put(k) for k in keys))

    assert await keys_of(store, "many/") == keys


async def test_delete_is_idempotent(store: Store) -> None:
    await store.put("d/k", b"x")

    await store.delete("d/k")
    await store.delete("d/k")
    await store.delete("never/existed")

    assert await store.head("d/k") is None
    assert await keys_of(store) == []


INVALID_KEYS = ["../x", "/abs", "a//b", "a b", "é", ".tmp/x", "a\\b", "", "a/", "./a", "x/../y",
                "tab\there", "x" * 1025, "a*b"]  # fmt: skip


@pytest.mark.parametrize("key", INVALID_KEYS)
async def test_invalid_keys_are_refused_before_any_io(store: Store, key: str) -> None:
    with pytest.raises(InvalidNameError, match="key"):
        await store.put(key, b"x")
    with pytest.raises(InvalidNameError):
        await store.get(key)
    with pytest.raises(InvalidNameError):
        await store.head(key)
    with pytest.raises(InvalidNameError):
        await store.delete(key)


async def test_invalid_list_prefix_is_refused(store: Store) -> None:
    with pytest.raises(InvalidNameError):
        await keys_of(store, "../")


async def test_put_file_then_get_file_round_trip(store: Store, tmp_path: Path) -> None:
    data = random.Random(2).randbytes(3 * MiB + 17)
    source = tmp_path / "source.bin"
    source.write_bytes(data)

    put = await store.put_file("files/a.bin", source)
    got = await store.get_file("files/a.bin", tmp_path / "out" / "nested" / "a.bin")

    assert (tmp_path / "out" / "nested" / "a.bin").read_bytes() == data
    assert put.size == got.size == len(data)
    assert put.etag == got.etag == md5_hex(data)
    assert [p.name for p in (tmp_path / "out" / "nested").iterdir()] == ["a.bin"]


async def test_get_file_replaces_an_existing_file(store: Store, tmp_path: Path) -> None:
    (tmp_path / "dest").write_bytes(b"old content that is longer")
    await store.put("k", b"new")

    await store.get_file("k", tmp_path / "dest")

    assert (tmp_path / "dest").read_bytes() == b"new"


async def test_multipart_upload_round_trips_and_checks_the_etag(
    make_store: StoreMaker, tmp_path: Path
) -> None:
    store = make_store(S3Config(multipart_threshold=5 * MiB, part_size=5 * MiB))
    data = random.Random(3).randbytes(11 * MiB)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    parts = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    expected = (
        multipart_etag([hashlib.md5(p).digest() for p in parts])
        if make_store.is_s3
        else md5_hex(data)
    )

    from_file = await store.put_file("big/file", source)
    from_bytes = await store.put("big/bytes", data)

    assert from_file.etag == from_bytes.etag == expected  # the store verified this ETag
    assert from_file.size == from_bytes.size == len(data)
    assert await store.get("big/file") == data
    await store.get_file("big/bytes", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == data


async def test_store_is_an_async_context_manager(make_store: StoreMaker) -> None:
    async with make_store() as store:
        await store.put("cm", b"x")
        assert isinstance(store, Store)
    await store.close()  # a second close is harmless


# --- local ---------------------------------------------------------------------------------


async def test_local_write_never_shows_a_partial_object(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    old, new = b"o" * 1000, random.Random(4).randbytes(40 * MiB)
    await store.put("raw/x/obj", old)
    final = tmp_path / "raw" / "x" / "obj"
    seen_sizes: set[int] = set()
    stray: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen_sizes.add(final.stat().st_size)
            for path in tmp_path.rglob("*"):
                if path.is_file() and path.relative_to(tmp_path).parts[0] != ".tmp":
                    stray.add(str(path.relative_to(tmp_path)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        await store.put("raw/x/obj", new)
    finally:
        done.set()
        watcher.join()

    assert seen_sizes <= {len(old), len(new)}
    assert stray == {"raw/x/obj"}  # temp files only ever lived under .tmp/
    assert final.read_bytes() == new
    assert list((tmp_path / ".tmp").iterdir()) == []


async def test_local_failed_put_leaves_nothing_behind(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("a", b"an object")

    with pytest.raises(StoreError, match="both an object and a folder"):
        await store.put("a/b", b"x")

    assert (tmp_path / "a").read_bytes() == b"an object"
    assert list((tmp_path / ".tmp").iterdir()) == []


async def test_local_ignores_stale_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / ".obj.deadbeef.part").write_bytes(b"half a write from a crash")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "not a key").write_bytes(b"written by another tool")

    await store.put("raw/ok", b"x")

    assert await keys_of(store) == ["raw/ok"]


async def test_local_etag_is_md5_even_without_the_cached_attribute(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / "copied").write_bytes(b"put here by rsync")
    await store.put("stale", b"one")
    os.setxattr(tmp_path / "stale", ETAG_XATTR, b"0" * 32 + b" 3 1")  # wrong mtime: ignored

    copied, stale = await store.head("copied"), await store.head("stale")

    assert copied is not None
    assert copied.etag == md5_hex(b"put here by rsync")
    assert stale is not None
    assert stale.etag == md5_hex(b"one")


async def test_local_etag_is_cached_with_the_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("k", b"content")
    st = (tmp_path / "k").stat()
    os.setxattr(tmp_path / "k", ETAG_XATTR, f"{'f' * 32} {st.st_size} {st.st_mtime_ns}".encode())

    head = await store.head("k")

    assert head is not None
    assert head.etag == "f" * 32  # listing a day of objects does not re-read them


async def test_local_delete_prunes_empty_folders(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("a/b/c", b"x")
    await store.put("a/keep", b"x")

    await store.delete("a/b/c")

    assert not (tmp_path / "a" / "b").exists()
    assert (tmp_path / "a" / "keep").exists()


async def test_local_list_and_get_intern_no_object_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pathlib interns each part of a path it parses; the interpreter's table of interned
    # strings never shrinks, so a merge listing and reading a day's chunks through Path
    # objects grew it by 1.9 MB
    store = LocalStore(tmp_path)
    names = [f"chunk-{n:04d}.jsonl.zst" for n in range(20)]
    for name in names:
        await store.put(f"raw/x/{name}", name.encode())
    interned: list[str] = []
    real_intern = sys.intern

    def counting_intern(text: str) -> str:
        interned.append(text)
        return real_intern(text)

    monkeypatch.setattr(sys, "intern", counting_intern)
    listed = [info.key async for info in store.list("raw/")]
    read = [await store.get(key) for key in listed]

    assert listed == [f"raw/x/{name}" for name in names]
    assert read == [name.encode() for name in names]
    assert not set(interned) & set(names), interned


@pytest.mark.parametrize(
    ("code", "error", "text"),
    [
        (errno.EACCES, StoreAccessError, "permission denied"),
        (errno.EROFS, StoreAccessError, "permission denied"),
        (errno.ENOSPC, StoreError, "no space left on device"),
        (errno.EIO, StoreError, "put 'k'"),
    ],
)
def test_local_os_errors_are_translated(code: int, error: type[StoreError], text: str) -> None:
    translated = oserror_to_store_error(OSError(code, os.strerror(code)), "put 'k' in /data")

    assert type(translated) is error
    assert text in str(translated)


# --- memory --------------------------------------------------------------------------------


async def test_memory_fail_next_then_recovers(memory_store: MemoryStore) -> None:
    memory_store.fail_next(2, ops=["put"])

    for _ in range(2):
        with pytest.raises(StoreUnavailableError):
            await memory_store.put("k", b"x")
    await memory_store.head("k")  # other operations are not affected
    await memory_store.put("k", b"x")

    assert await memory_store.get("k") == b"x"
    assert memory_store.calls.count(("put", "k")) == 3


async def test_memory_down_flag_fails_everything(memory_store: MemoryStore) -> None:
    memory_store.fail_next(1, StoreAccessError("denied"))
    with pytest.raises(StoreAccessError):
        await memory_store.get("k")

    memory_store.down = True
    with pytest.raises(StoreUnavailableError):
        await memory_store.put("k", b"x")
    with pytest.raises(StoreUnavailableError):
        await keys_of(memory_store)


# --- S3 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_s3_store", ["rclone"], indirect=True)
async def test_s3_wrong_content_md5_is_rejected_by_the_server(make_s3_store: StoreMaker) -> None:
    # moto does not check Content-MD5; the in-transit corruption test covers it instead.
    store = make_s3_store()
    assert isinstance(store, S3Store)
    wrong = base64.b64encode(hashlib.md5(b"other bytes").digest()).decode()

    with pytest.raises(StoreIntegrityError, match="BadDigest"):
        await store._put_single("k", b"these bytes", content_md5=wrong)

    assert await store.head("k") is None


async def test_s3_keys_live_under_the_url_prefix(make_s3_store: StoreMaker) -> None:
    store = make_s3_store()
    assert make_s3_store.server is not None
    await store.put("a/b", b"x")

    admin = make_s3_store.server.admin()
    listed = admin.list_objects_v2(Bucket="booktape-test", Prefix=f"{make_s3_store.prefix}/")
    other = S3Store("booktape-test", "elsewhere", endpoint_url=make_s3_store.server.endpoint)

    try:
        assert [o["Key"] for o in listed["Contents"]] == [f"{make_s3_store.prefix}/a/b"]
        assert await keys_of(other) == []
    finally:
        await other.close()


@pytest.mark.parametrize("make_s3_store", ["rclone"], indirect=True)
async def test_s3_wrong_secret_is_an_access_error_and_not_retried(
    make_s3_store: StoreMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto accepts any credentials; rclone checks the signature.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + SECRET_KEY)
    store = make_s3_store()
    started = time.monotonic()

    with pytest.raises(StoreAccessError) as caught:
        await store.put("k", b"x")

    assert time.monotonic() - started < 1.0  # default policy would back off for seconds
    assert SECRET_KEY not in str(caught.value)
    assert caught.value.__cause__ is not None


async def test_s3_server_down_is_unavailable_quickly(make_s3_store: StoreMaker) -> None:
    port = free_port()  # nothing listens there any more
    store = make_s3_store(
        S3Config(retry=FAST_RETRY, connect_timeout_s=1), endpoint=f"http://127.0.0.1:{port}"
    )
    started = time.monotonic()

    with pytest.raises(StoreUnavailableError, match="3 attempts") as caught:
        await store.get("k")

    assert time.monotonic() - started < 3.0
    assert caught.value.__cause__ is not None


async def test_s3_endpoint_comes_from_the_environment_and_explicit_wins(
    moto_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    from_env = S3Store("booktape-test", "env")
    monkeypatch.setenv("AWS_ENDPOINT_URL", CLOSED_ENDPOINT)
    explicit = S3Store("booktape-test", "env", endpoint_url=moto_server.endpoint)
    try:
        await from_env.put("k", b"via env")

        assert await explicit.get("k") == b"via env"
        assert from_env.path_style
        assert explicit.path_style
    finally:
        await from_env.close()
        await explicit.close()


def _proxied(proxy: FaultProxy, part_size: int | None = None) -> S3Store:
    cfg = S3Config(retry=RetryPolicy(max_attempts=4, base_s=0.01, cap_s=0.05))
    if part_size is not None:
        cfg = dataclasses.replace(cfg, multipart_threshold=part_size, part_size=part_size)
    return S3Store("booktape-test", "proxied", endpoint_url=proxy.url, config=cfg)


async def test_s3_transient_errors_are_retried(
    fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="booktape.stores.s3_errors")
    store = _proxied(fault_proxy)
    fault_proxy.faults += [
        Fault("status", 503, "SlowDown", method="PUT"),
        Fault("status", 500, "InternalError", method="PUT"),
        # aiohttp itself resends once when a reused connection drops; the second drop is ours
        Fault("drop", method="PUT"),
        Fault("drop", method="PUT"),
        Fault("status", 503, "ServiceUnavailable", method="GET"),
    ]
    try:
        await store.put("k", b"eventually")

        assert await store.get("k") == b"eventually"
        assert [m for m, _ in fault_proxy.seen] == ["PUT"] * 5 + ["GET"] * 2
        retried = [r.error for r in caplog.records if r.getMessage().startswith("store request")]  # type: ignore[attr-defined]
        assert retried[:2] == ["SlowDown (503)", "InternalError (500)"]
        assert "Connection" in retried[2]
        assert retried[3:] == ["ServiceUnavailable (503)"]
    finally:
        await store.close()


async def test_s3_gives_up_after_max_attempts(fault_proxy: FaultProxy) -> None:
    store = _proxied(fault_proxy)
    fault_proxy.faults += [Fault("status", 503, "SlowDown") for _ in range(4)]
    try:
        with pytest.raises(StoreUnavailableError, match="SlowDown"):
            await store.put("k", b"x")
        assert len(fault_proxy.seen) == 4
    finally:
        await store.close()


async def test_s3_access_denied_is_not_retried(fault_proxy: FaultProxy) -> None:
    store = _proxied(fault_proxy)
    fault_proxy.faults.append(Fault("status", 403, "AccessDenied"))
    try:
        with pytest.raises(StoreAccessError):
            await store.put("k", b"x")
        assert len(fault_proxy.seen) == 1
    finally:
        await store.close()


async def test_s3_body_corrupted_in_transit_is_detected(fault_proxy: FaultProxy) -> None:
    store = _proxied(fault_proxy)
    fault_proxy.faults.append(Fault("corrupt", method="PUT"))
    try:
        with pytest.raises(StoreIntegrityError, match="ETag"):
            await store.put("k", b"precious bytes")
    finally:
        await store.close()


async def test_s3_wrong_etag_in_the_answer_is_detected(fault_proxy: FaultProxy) -> None:
    store = _proxied(fault_proxy)
    fault_proxy.faults.append(Fault("etag", method="PUT"))
    try:
        with pytest.raises(StoreIntegrityError, match="ETag"):
            await store.put("k", b"x")
    finally:
        await store.close()


async def test_s3_failed_multipart_upload_is_aborted(
    fault_proxy: FaultProxy, moto_server: S3Server
) -> None:
    store = _proxied(fault_proxy, part_size=5 * MiB)
    fault_proxy.faults.append(Fault("status", 400, "InvalidArgument", query="partNumber=2"))
    try:
        with pytest.raises(StoreError, match="InvalidArgument"):
            await store.put("big", random.Random(5).randbytes(11 * MiB))
    finally:
        await store.close()

    pending = moto_server.admin().list_multipart_uploads(Bucket="booktape-test", Prefix="proxied/")
    assert pending.get("Uploads", []) == []
    assert "DELETE" in [m for m, _ in fault_proxy.seen]
