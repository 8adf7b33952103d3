"""Redis URLs: passwords with any character, a separate password setting, and TLS (rediss://)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from bullmq import Queue

from app import embedded
from bridge.job import Job
from bridge.producer import QueueProducer
from bridge.redis_client import RedisClient
from orderflow.settings import Settings, normalize_redis_url
from tests.bridge_helpers import counts, eventually, running, unique_spec

HARD = "p#ss/w@rd:?%&x y"


@pytest.mark.parametrize(
    ("url", "password", "expected"),
    [
        ("redis://:p#ss/w@rd@redis:6379/0", "", "redis://:p%23ss%2Fw%40rd@redis:6379/0"),
        ("redis://:p%23ss@redis:6379/0", "", "redis://:p%23ss@redis:6379/0"),  # already encoded
        ("redis://redis:6379/0", HARD, "redis://:p%23ss%2Fw%40rd%3A%3F%25%26x%20y@redis:6379/0"),
        ("redis://:old@redis:6379/2", "new", "redis://:new@redis:6379/2"),
        ("redis://app:s#cret@redis:6379/0", "", "redis://app:s%23cret@redis:6379/0"),
        ("rediss://:k/ey@cache.example:6380/0?ssl_cert_reqs=required", "",
         "rediss://:k%2Fey@cache.example:6380/0?ssl_cert_reqs=required"),
        ("redis://localhost:6379/0", "", "redis://localhost:6379/0"),
    ],
)  # fmt: skip
def test_redis_url_password_with_any_character_is_encoded(
    url: str, password: str, expected: str
) -> None:
    assert normalize_redis_url(url, password) == expected
    settings = Settings(redis_url=url, redis_password=password)
    assert settings.redis_url == expected
    parsed = urlparse(settings.redis_url)
    assert parsed.hostname in ("redis", "cache.example", "localhost")


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server that wants a password full of URL-breaking characters."""
    folder = tmp_path_factory.mktemp("auth-redis")
    port = embedded.free_port()
    args = [*embedded.redis_server_args(port=port, data_dir=folder), "--requirepass", HARD]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    embedded.wait_for_port("127.0.0.1", port, timeout=30, proc=proc)
    yield f"redis://127.0.0.1:{port}/0"
    embedded.stop(proc)


async def test_worker_and_bullmq_queue_authenticate_with_a_hard_password(auth_redis: str) -> None:
    settings = Settings(redis_url=auth_redis, redis_password=HARD)
    await _round_trip(settings)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A redis-server that speaks TLS only, with a certificate of a CA made for the test."""
    folder = tmp_path_factory.mktemp("tls-redis")
    ca, cert, key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run([*openssl, "-keyout", folder / "ca.key", "-out", ca, "-subj", "/CN=test-ca"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", folder / "cert.csr", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(["openssl", "x509", "-req", "-in", folder / "cert.csr", "-CA", ca,
                    "-CAkey", folder / "ca.key", "-CAcreateserial", "-out", cert, "-days", "1",
                    "-extfile", ext], check=True, capture_output=True)  # fmt: skip
    port = embedded.free_port()
    args = [*embedded.redis_server_args(port=0, data_dir=folder / "data"),
            "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    embedded.wait_for_port("127.0.0.1", port, timeout=30, proc=proc)
    yield f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}", ca
    embedded.stop(proc)


async def test_rediss_url_runs_the_worker_and_the_bullmq_queue_over_tls(
    tls_redis: tuple[str, Path],
) -> None:
    url, _ = tls_redis
    await _round_trip(Settings(redis_url=url))


async def test_rediss_refuses_a_server_it_cannot_verify(tls_redis: tuple[str, Path]) -> None:
    url, _ = tls_redis
    unverified = url.split("?")[0]  # no CA: the test CA is not trusted by the system
    client = RedisClient(unverified)
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        await client.execute("PING")
    await client.close()


async def _round_trip(settings: Settings) -> None:
    spec = unique_spec(settings, rate_limit=None)
    producer = QueueProducer.connect(spec, settings.redis_url)
    await producer.add("send-welcome", {"to": "a@example.com"}, {"jobId": "tls-1"})
    done: list[str] = []

    async def process(job: Job) -> None:
        done.append(job.id)

    async with running(spec, process, settings.redis_url):
        await eventually(lambda: _has(done))
    assert (await counts(spec, settings.redis_url))["completed"] == 1  # redis-py, same URL
    queue = Queue(spec.name, {"connection": settings.redis_url, "prefix": spec.prefix})
    assert (await queue.getJob("tls-1")) is not None
    await queue.close()
    await producer.close()


async def _has(done: list[str]) -> bool:
    return bool(done)


def test_sentinel_url_keeps_the_two_passwords_apart_and_errors_never_echo_them() -> None:
    from orderflow.redis_url import parse_sentinel_url

    settings = Settings(
        redis_url="redis+sentinel://:s#nt@10.0.0.1:26379,10.0.0.2/mymaster/2",
        redis_password=HARD,
    )
    target = parse_sentinel_url(settings.redis_url)
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
    assert (target.master, target.db) == ("mymaster", 2)
    assert (target.sentinel_password, target.password) == ("s#nt", HARD)
    assert settings.redis_data_password == HARD
    with pytest.raises(ValueError) as err:
        Settings(redis_url="redis+sentinel://:hunter2secret@h:26379")
    assert "ORDERFLOW_REDIS_URL" in str(err.value) and "hunter2secret" not in str(err.value)


def test_cluster_seed_lists_hash_tags_redirects_and_redaction() -> None:
    from app.backends import redact_url
    from bridge.cluster import Redirect, parse_redirect, slot_of
    from orderflow.redis_url import hash_tag, normalize_cluster_url, parse_cluster_url

    url = normalize_cluster_url("redis://app@h1:7000,[::1]:7001,h3/0?ssl_ca_certs=/ca.pem", HARD)
    target = parse_cluster_url(url)
    assert target.nodes == (("h1", 7000), ("::1", 7001), ("h3", 6379))
    assert (target.password, target.username, target.option("ssl_ca_certs")) == (
        HARD,
        "app",
        "/ca.pem",
    )
    assert HARD not in redact_url(url) and "p%23ss" not in redact_url(url)
    assert redact_url(url).startswith("redis+cluster://h1:7000,")
    assert [hash_tag(p) for p in ("{bull}", "bull", "{}x", "a{b}c{d}", "x}{y")] == [
        "bull",
        None,
        None,
        "b",
        None,
    ]
    assert slot_of("{bull}") == slot_of("x{bull}y") != slot_of("{other}")
    assert parse_redirect("MOVED 3999 127.0.0.1:6381") == Redirect(
        "MOVED", 3999, ("127.0.0.1", 6381)
    )
    assert parse_redirect("ASK 1 [::1]:7000") == Redirect("ASK", 1, ("::1", 7000))
    assert parse_redirect("TRYAGAIN Multiple keys request during rehashing of slot") == Redirect(
        "TRYAGAIN"
    )
    assert parse_redirect("ERR wrong number of arguments") is None
