"""How long the edge takes to check a signed model push, by model size.

    python bench/bench_signing.py            # 64 KiB, 1 MiB, 16 MiB (the size limit)
    python bench/bench_signing.py --quick    # 64 KiB and 1 MiB, fewer repeats

Prints decode (framing + JSON) and verify_push (framing + sha256 + Ed25519) times; the
daemon should run the check off the MQTT network thread when it takes more than a few ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

from edge import signing  # noqa: E402
from trainer.signing import sign_model  # noqa: E402


def best_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    args = parser.parse_args(argv)
    sizes = [64 * 1024, 1024 * 1024] if args.quick else [64 * 1024, 1024 * 1024,
                                                          signing.MAX_MODEL_BYTES - 4096]
    repeats = 3 if args.quick else 10
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    keys = [signing.public_key_from_pem(pem)]
    print(f"{'model bytes':>12} {'decode_push ms':>15} {'verify_push ms':>15}")
    for size in sizes:
        model = os.urandom(size)
        payload = signing.encode_push(model, sign_model(model, key, "m.onnx", name="b",
                                                        version="1"))
        decode = best_ms(lambda p=payload: signing.decode_push(p), repeats)
        verify = best_ms(lambda p=payload: signing.verify_push(p, keys), repeats)
        print(f"{size:>12} {decode:>15.2f} {verify:>15.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
