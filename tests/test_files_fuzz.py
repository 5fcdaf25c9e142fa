"""Fuzzing the λ-file loader with what a stranger's file can hold (issue 10).

Families: random bytes, every prefix of a real file, every bit of a real file's header flipped (and every bit of its
tensor data), tensors of every dtype and wrong shapes, and bad metadata (every field set to values of every JSON type,
random JSON in random places, huge integers, deep nesting, bad format versions). Every case must end in one of two
ways: it loads and every entry is valid (types, lengths, finiteness, |λ| bound, usable by a lookup and re-savable), or
LambdaFileError with a message naming the file. Then a store over a folder of every rejected case plus one good file
finds the good entry.

Seeded and bounded for CI (about 10 s here); ``DODE_FUZZ_CASES=N`` adds N random cases to each random family for a
longer run, ``DODE_FUZZ_SEED`` changes the seed. Run with ``-s`` to see the counts.
"""
import json
import math
import os
import random

import pytest
import torch
from safetensors.torch import save as serialize

import dode
from dode.lambdas import LambdaEntry
from dode.lambdas import OBJECTIVES
from dode.lambdas.schema import LAMBDA_BOUND, SCHEDULES
from dode.samplers import SAMPLER_NAMES, karras_sigmas

EXTRA = int(os.environ.get("DODE_FUZZ_CASES", "0"))
SEED = int(os.environ.get("DODE_FUZZ_SEED", "10"))
HUGE = '"__huge_int__"'  # placeholders replaced in the JSON text (json.dumps can't write them)
DEEP = '"__deep__"'
CREATED = "2026-01-01T00:00:00+00:00"  # fixed, so the real file (and every case) is the same bytes in every run
FIELDS = ("sampler", "steps", "model", "aliases", "cfg", "teacher", "scale", "first_step", "schedule", "objective",
          "metrics", "created", "dode_version")


def real_entries():
    heun = karras_sigmas(3)
    fitted = karras_sigmas(4, rho=3.0)
    return [LambdaEntry("heun", heun, torch.linspace(-0.2, 0.3, dode.nfe("heun", heun)), model="fp1-abc",
                        aliases=["0123456789"], cfg=7.0, teacher="heun", scale=4,
                        metrics={"rmse_stock": 0.2, "scheduler": "karras", "ok": True, "none": None}, created=CREATED),
            LambdaEntry("euler", fitted, torch.full((4,), 0.1), schedule="fitted", objective="final",
                        created=CREATED)]


def tensors_of(entries):
    tensors = {}
    for k, e in enumerate(entries):
        tensors[f"{k}.lambdas"], tensors[f"{k}.sigmas"] = e.lambdas.clone(), e.sigmas.clone()
    return tensors


def container(tensors, header, entries_text=None):
    """safetensors bytes with ``header`` as metadata (``entries_text``: the raw entry-list JSON)."""
    meta = dict(header)
    if entries_text is not None:
        meta["entries"] = entries_text
    return serialize(tensors, metadata={k: v for k, v in meta.items() if v is not None})


def raw_container(header_obj, data=b""):
    """safetensors bytes built by hand: any header JSON (even one safetensors would not write) and data."""
    text = json.dumps(header_obj).encode()
    return len(text).to_bytes(8, "little") + text + data


def canonical(data):
    """``data`` with its header's keys sorted (safetensors writes metadata in hash order, which changes between runs;
    the bit-flip cases must be the same in every run)."""
    size = int.from_bytes(data[:8], "little")
    text = json.dumps(json.loads(data[8:8 + size]), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def random_json(rng, depth=0):
    roll = rng.randrange(12 if depth < 3 else 8)
    if roll == 0:
        return None
    if roll == 1:
        return rng.choice([True, False])
    if roll == 2:
        return rng.choice([0, 1, -1, 5, 7, 2 ** 63, -2 ** 64, rng.randint(-10 ** 6, 10 ** 6)])
    if roll == 3:
        return rng.choice([0.0, -0.0, 1e-320, 1e308, 7.5, float("nan"), float("inf"), -float("inf"), rng.random()])
    if roll in (4, 5):
        return rng.choice(["", "euler", "heun", "1", "7", "given", "fitted", "greedy", "final", "²", "١", "x" * 5000,
                           "\u0000", "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
                           "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(8)))])
    if roll == 6:
        return HUGE
    if roll == 7:
        return DEEP
    if roll in (8, 9):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(FIELDS + ("", "x", "0")): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def dump(value):
    text = json.dumps(value)
    return text.replace(HUGE, "1" + "0" * 5000).replace(DEEP, "[" * 50000 + "]" * 50000)


def bad_metadata_cases(rng, entries, header):
    metas = [e.meta() for e in entries]
    tensors = tensors_of(entries)
    pool = [None, True, False, 0, -1, 2.5, 1e300, float("nan"), "", "7", "euler", "²", [], ["a"], [1], {}, {"a": [1]},
            HUGE, DEEP]
    for field in FIELDS:  # every field set to values of every JSON type
        for value in pool:
            changed = [dict(m) for m in metas]
            changed[0][field] = value
            yield f"field {field}={str(value)[:20]}", container(tensors, header, dump(changed))
    for key, values in [("format", [None, "", "dode.lambda", "DODE.LAMBDAS"]),
                        ("format_version", [None, "", "0", "01", "1.0", " 1", "1 ", "١", "²", "2", "99", "-1",
                                            "1" * 5000, "x"]),
                        ("dode_version", [None, ""])]:
        for value in values:
            yield f"header {key}={str(value)[:20]}", container(tensors, {**header, key: value}, dump(metas))
    for text in [None, "", "{", "[]", "{}", "null", "[null]", "[[]]", '"x"', "1" + "0" * 5000, "[" * 50000,
                 dump(metas) + "x", dump(metas * 2), dump(metas[:1])]:
        yield f"entries {str(text)[:20]}", container(tensors, header, text)
    for i in range(300 + EXTRA):  # random JSON in random places
        changed = [dict(m) for m in metas]
        where = rng.randrange(4)
        if where == 0:
            changed[rng.randrange(len(changed))][rng.choice(FIELDS + ("other",))] = random_json(rng)
        elif where == 1:
            changed[rng.randrange(len(changed))].pop(rng.choice(FIELDS), None)
        elif where == 2:
            changed[rng.randrange(len(changed))] = random_json(rng)
        else:
            changed = random_json(rng)
        yield f"random metadata {i}", container(tensors, header, dump(changed))


def dtype_shape_cases(entries, header):
    metas = json.dumps([e.meta() for e in entries])
    dtypes = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16,
              torch.uint32, torch.uint64, torch.float16, torch.bfloat16, torch.float32, torch.complex64,
              torch.float8_e4m3fn, torch.float8_e5m2]
    for name in tensors_of(entries):
        good = tensors_of(entries)[name]
        variants = [(str(d), good.to(d)) for d in dtypes]
        variants += [("0-d", good[0].clone()), ("empty", good[:0].clone()), ("2-D", good[None].clone()),
                     ("column", good[:, None].clone()), ("3-D", good[None, None].clone()),
                     ("longer", torch.cat([good, good[-1:]])), ("shorter", good[:-1].clone()),
                     ("huge", good * 1e300), ("nan", good * float("nan")), ("flipped", good.flip(0))]
        for label, tensor in variants:
            try:
                data = container(tensors_of(entries) | {name: tensor}, header, metas)
            except Exception:  # this safetensors can't write that dtype; the raw cases below cover it
                continue
            yield f"{name} {label}", data
        for dtype in ["C64", "F4", "XX", "", "F64 ", "f64", "U128"]:
            tensor = {"dtype": dtype, "shape": [4], "data_offsets": [0, 32]}
            yield f"{name} raw dtype {dtype!r}", raw_container(
                {"__metadata__": {**header, "entries": metas}, name: tensor}, bytes(32))
    for shape, offsets in [([10 ** 12], [0, 32]), ([-1], [0, 8]), ([4], [32, 0]), ([4], [0, 10 ** 15]),
                           ([2, 2], [0, 8])]:
        yield f"raw shape {shape} {offsets}", raw_container(
            {"__metadata__": {**header, "entries": metas}, "0.lambdas": {"dtype": "F64", "shape": shape,
                                                                          "data_offsets": offsets}}, bytes(32))
    for meta in [[], ["x"], {"a": 1}, "s", 1, None]:
        yield f"raw __metadata__ {meta!r}", raw_container({"__metadata__": meta})


def byte_cases(rng, real):
    size = int.from_bytes(real[:8], "little")
    for i in range(len(real)):
        yield f"prefix {i}", real[:i]
    for i in range(0, 8 * (8 + size), 1 if EXTRA else 3):  # every (CI: every third) bit of the length and header
        flipped = bytearray(real)
        flipped[i // 8] ^= 1 << (i % 8)
        yield f"header bit {i}", bytes(flipped)
    for i in range(8 * (8 + size), 8 * len(real), 3):  # every third bit of the tensor data
        flipped = bytearray(real)
        flipped[i // 8] ^= 1 << (i % 8)
        yield f"data bit {i}", bytes(flipped)
    for i in range(300 + EXTRA):
        n = rng.choice([0, 1, 7, 8, 9, 64, rng.randrange(4096)])
        noise = bytes(rng.getrandbits(8) for _ in range(n))
        if i % 2:  # a plausible length field, then noise
            noise = min(n, rng.randrange(1, 512)).to_bytes(8, "little") + b"{" + noise
        yield f"random bytes {i}", noise
    for i in range(100 + EXTRA // 10):  # many random bit flips at once
        flipped = bytearray(real)
        for _ in range(rng.randrange(2, 20)):
            j = rng.randrange(8 * len(real))
            flipped[j // 8] ^= 1 << (j % 8)
        yield f"multi flip {i}", bytes(flipped)


def is_metric(v):
    return v is None or isinstance(v, (str, bool)) or (isinstance(v, (int, float)))


def assert_valid(entries, tmp_path, resave):
    """Everything a host relies on holds for every loaded entry (``resave``: and saving them again round-trips)."""
    assert isinstance(entries, list) and entries
    for e in entries:
        assert e.sampler in SAMPLER_NAMES
        for t in (e.sigmas, e.lambdas):
            assert t.dtype == torch.float64 and t.ndim == 1 and torch.isfinite(t).all()
        s = e.sigmas
        assert len(s) >= 2 and (s[1:] < s[:-1]).all() and (s[:-1] > 0).all() and s[-1] >= 0
        assert len(e.lambdas) == dode.nfe(e.sampler, s) and e.lambdas.abs().max() <= LAMBDA_BOUND
        assert isinstance(e.model, str) and all(isinstance(a, str) and a for a in e.aliases)
        assert e.cfg is None or (type(e.cfg) is float and math.isfinite(e.cfg))
        assert e.teacher is None or isinstance(e.teacher, str)
        assert e.scale is None or (type(e.scale) is int and e.scale >= 1)
        assert isinstance(e.first_step, str) and e.schedule in SCHEDULES and e.objective in OBJECTIVES
        assert isinstance(e.metrics, dict) and all(isinstance(k, str) and is_metric(v) for k, v in e.metrics.items())
        assert isinstance(e.created, str) and isinstance(e.dode_version, str)
        assert dode.find_lambdas([e], e.sampler, s, model=[e.model, *e.aliases], cfg=e.cfg) is e
        assert isinstance(e.describe(), str)
    if not resave:
        return
    again = dode.load_lambdas(dode.save_lambdas(tmp_path / "resaved.safetensors", entries))
    assert [a.meta() for a in again] == [e.meta() for e in entries]


def test_every_fuzzed_file_loads_valid_or_fails_with_a_named_error(tmp_path):
    rng = random.Random(SEED)
    entries = real_entries()
    real = canonical(dode.save_lambdas(tmp_path / "real.safetensors", entries).read_bytes())
    header = {"format": "dode.lambdas", "format_version": "1", "dode_version": dode.__version__}
    folder = tmp_path / "cases"
    folder.mkdir()
    counts, rejected = {}, 0
    families = [("bytes", byte_cases(rng, real)), ("dtype/shape", dtype_shape_cases(entries, header)),
                ("metadata", bad_metadata_cases(rng, entries, header))]
    for family, cases in families:
        for n, (name, data) in enumerate(cases):
            path = folder / f"{family[0]}{n:06d}.safetensors"
            path.write_bytes(data)
            try:
                loaded = dode.load_lambdas(path)
            except dode.LambdaFileError as e:
                message = str(e)
                assert message.startswith(f"{path}: ") and len(message) > len(str(path)) + 12, (name, message)
                counts[family, "rejected"] = counts.get((family, "rejected"), 0) + 1
                rejected += 1
                continue
            except Exception as e:  # anything else leaked out of the loader
                pytest.fail(f"{family} case {name!r}: {type(e).__name__}: {str(e)[:300]}")
            assert_valid(loaded, tmp_path, resave=sum(v for (f, k), v in counts.items() if k == "loaded") < 50)
            os.unlink(path)
            counts[family, "loaded"] = counts.get((family, "loaded"), 0) + 1
    total = sum(counts.values())
    print(f"\nfuzz (seed {SEED}): {total} cases, "
          + ", ".join(f"{f} {k} {v}" for (f, k), v in sorted(counts.items())))
    assert counts["bytes", "rejected"] > 1000 and counts["metadata", "rejected"] > 200

    # a store over a folder holding every rejected case, plus things that are not files, finds the one good file
    os.symlink(tmp_path / "missing", folder / "dangling.safetensors")
    os.symlink(folder / "loop.safetensors", folder / "loop.safetensors")
    (folder / "dir.safetensors").mkdir()
    os.mkfifo(folder / "fifo.safetensors")
    good = LambdaEntry("dpmpp_2m", karras_sigmas(6), torch.full((6,), 0.05), model="the-good-one", cfg=5.0)
    dode.save_lambdas(folder / "zzz-good.safetensors", good)
    store = dode.LambdaStore([folder])
    found, where = store.lookup("the-good-one", "dpmpp_2m", karras_sigmas(6), cfg=5.0)
    assert found is not None and where == str(folder / "zzz-good.safetensors"), where
    assert len(store.skipped) == rejected + 4
