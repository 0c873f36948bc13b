"""The response cache on its own: GATEWAY_CACHE parsing, the key (what must and must not change it),
the memory LRU bound, all-or-nothing lookups, and Redis (a real redis-server): TTL, shared keys,
and answering without it when it fails."""

from __future__ import annotations

import time

import pytest
import redis

from flask_server.config import ConfigError
from flask_server.cache_stores import DEFAULT_MEMORY_SIZE, REDIS_RETRY_AFTER, MemoryCache, RedisCache
from flask_server.response_cache import KEY_PREFIX, CachedModel, answer_identity, entry_key, open_cache
from tests.gateway.conftest import closed_port_url, image_bytes
from tests.support.redis_server import redis_url  # noqa: F401 (fixture)

IDENTITY = answer_identity({"model_name": "m", "signature": "serving_uint8", "input_size": (32, 32)})
IMAGE = image_bytes(seed=1)
OTHER_IMAGE = image_bytes(seed=2)
ANSWER = [{"wnid": "n01", "label": "cat", "score": 0.7126543521881104},
          {"wnid": "n02", "label": "dog", "score": 1e-07}]


# --- GATEWAY_CACHE ----------------------------------------------------------------------------------

def test_empty_setting_means_no_cache():
    assert open_cache("") is None and open_cache("  ") is None


@pytest.mark.parametrize("url, size", [("memory://", DEFAULT_MEMORY_SIZE), ("memory://?size=3", 3),
                                       ("memory://?size=100000", 100000)])
def test_memory_cache_size(url, size):
    cache = open_cache(url)
    assert isinstance(cache, MemoryCache) and cache.size == size


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://cache.example:6380/1", "unix:///run/redis.sock"])
def test_redis_urls_open_a_redis_cache_without_connecting(url):
    assert isinstance(open_cache(url), RedisCache)


@pytest.mark.parametrize("url, message", [
    ("memory://?size=0", "positive"), ("memory://?size=lots", "positive"), ("memory://?sise=3", "takes only"),
    ("memory://somewhere", "takes only"), ("memcached://127.0.0.1", "expected memory://"), ("lru", "expected"),
])
def test_bad_settings_are_config_errors(url, message, make_app):
    with pytest.raises(ConfigError, match=message):
        open_cache(url)
    with pytest.raises(ConfigError, match="GATEWAY_CACHE"):
        make_app(GATEWAY_CACHE=url)


@pytest.mark.parametrize("ttl", ["0", "-5", "soon"])
def test_bad_ttl_is_a_config_error(ttl, make_app):
    with pytest.raises(ConfigError, match="GATEWAY_CACHE_TTL"):
        make_app(GATEWAY_CACHE="redis://127.0.0.1:1/0", GATEWAY_CACHE_TTL=ttl)


# --- the key ----------------------------------------------------------------------------------------

def key(**changes) -> str:
    args = {"route": "tiny", "identity": IDENTITY, "version": 1, "k": 5, "image": IMAGE, **changes}
    return entry_key(**args)


def test_the_same_request_gives_the_same_key():
    assert key() == key(image=bytes(IMAGE))
    assert key().startswith(KEY_PREFIX)


@pytest.mark.parametrize("change", [
    {"route": "other"}, {"version": 2}, {"k": 3}, {"image": OTHER_IMAGE},
    {"image": IMAGE[:-1] + bytes([IMAGE[-1] ^ 1])},  # one bit of the file
    {"identity": answer_identity({"model_name": "m", "signature": "serving_bytes", "input_size": (32, 32)})},
])
def test_everything_that_changes_the_answer_changes_the_key(change):
    assert key(**change) != key()


def test_answer_identity_of_sets_is_the_same_in_every_process():
    # A Redis cache is shared between processes, whose string hashes (and so set order) differ.
    settings = {"explicit": frozenset(f"key{i}" for i in range(20)), "tags": {"b", "a"}}
    assert answer_identity(settings) == answer_identity({"explicit": sorted(settings["explicit"]), "tags": ["a", "b"]})
    with pytest.raises(TypeError):
        answer_identity({"odd": object()})


def test_answer_identity_ignores_order_and_sees_every_value():
    settings = {"model_name": "m", "input_size": (32, 32), "preprocessing": "tf", "labels": [("a", "b")]}
    assert answer_identity(settings) == answer_identity(dict(reversed(settings.items())))
    for name, other in [("model_name", "n"), ("input_size", (32, 33)), ("preprocessing", "caffe"),
                        ("labels", [("a", "c")])]:
        assert answer_identity({**settings, name: other}) != answer_identity(settings), name


# --- memory: an LRU bound ---------------------------------------------------------------------------

def test_memory_cache_evicts_the_least_recently_used():
    cache = MemoryCache(2)
    cache.set_many({"a": b"1", "b": b"2"})
    assert cache.get_many(["a"]) == [b"1"]  # "a" is now the most recently used
    cache.set_many({"c": b"3"})
    assert cache.get_many(["a", "b", "c"]) == [b"1", None, b"3"]
    assert len(cache) == 2


def test_memory_cache_never_holds_more_than_its_size():
    cache = MemoryCache(3)
    for i in range(10):
        cache.set_many({f"k{i}": b"x", f"j{i}": b"y"})
        assert len(cache) <= 3
    assert cache.get_many(["j9", "k9", "j8"]) == [b"y", b"x", b"y"]


def test_overwriting_refreshes_an_entry():
    cache = MemoryCache(2)
    cache.set_many({"a": b"1", "b": b"2"})
    cache.set_many({"a": b"3"})
    cache.set_many({"c": b"4"})
    assert cache.get_many(["a", "b", "c"]) == [b"3", None, b"4"]


# --- lookups: all or nothing ------------------------------------------------------------------------

def test_answers_come_back_equal():
    model = CachedModel(MemoryCache(8), "tiny")
    keys = model.keys(IDENTITY, 1, 2, [IMAGE, OTHER_IMAGE])
    assert model.lookup(keys) is None
    model.store(keys, [ANSWER, ANSWER[:1]])
    assert model.lookup(keys) == [ANSWER, ANSWER[:1]]
    assert model.lookup(model.keys(IDENTITY, 2, 2, [IMAGE])) is None  # another version: its own entries


def test_a_batch_with_one_unknown_image_is_a_miss():
    model = CachedModel(MemoryCache(8), "tiny")
    model.store(model.keys(IDENTITY, 1, 2, [IMAGE]), [ANSWER])
    assert model.lookup(model.keys(IDENTITY, 1, 2, [IMAGE])) == [ANSWER]
    assert model.lookup(model.keys(IDENTITY, 1, 2, [IMAGE, OTHER_IMAGE])) is None


def test_an_unreadable_entry_is_a_miss():
    cache = MemoryCache(8)
    model = CachedModel(cache, "tiny")
    [entry] = model.keys(IDENTITY, 1, 2, [IMAGE])
    cache.set_many({entry: b"\xff not json"})
    assert model.lookup([entry]) is None


# --- redis ------------------------------------------------------------------------------------------

@pytest.mark.redis
def test_redis_entries_are_shared_and_expire(redis_url):  # noqa: F811
    writer, reader = RedisCache(redis_url, ttl=30), RedisCache(redis_url, ttl=30)
    model = CachedModel(writer, "tiny-shared")
    keys = model.keys(IDENTITY, 1, 2, [IMAGE])
    model.store(keys, [ANSWER])
    # another process (another client) reads what this one wrote
    assert CachedModel(reader, "tiny-shared").lookup(keys) == [ANSWER]
    with redis.Redis.from_url(redis_url) as store:
        assert 0 < store.pttl(keys[0]) <= 30_000
    writer.close()
    reader.close()


@pytest.mark.redis
def test_redis_entries_are_gone_after_the_ttl(redis_url):  # noqa: F811
    cache = RedisCache(redis_url, ttl=0.2)
    cache.set_many({f"{KEY_PREFIX}ttl-test": b"1"})
    assert cache.get_many([f"{KEY_PREFIX}ttl-test"]) == [b"1"]
    deadline = time.monotonic() + 5
    while cache.get_many([f"{KEY_PREFIX}ttl-test"]) != [None]:
        assert time.monotonic() < deadline, "entry outlived its TTL"
        time.sleep(0.05)
    cache.close()


def test_a_dead_redis_is_a_miss_and_is_left_alone_for_a_while():
    now = [100.0]
    errors = []
    cache = RedisCache(closed_port_url().replace("http", "redis") + "/0", on_error=lambda: errors.append(1),
                       clock=lambda: now[0])
    assert cache.get_many(["a", "b"]) == [None, None]
    cache.set_many({"a": b"1"})  # skipped: no second wait on a server known to be down
    assert len(errors) == 1
    now[0] += REDIS_RETRY_AFTER + 0.1
    assert cache.get_many(["a"]) == [None]
    assert len(errors) == 2
    cache.close()
