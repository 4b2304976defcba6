"""``python -m bench``: the KMIP load benchmark (OpenKCM vs PyKMIP), the libmongocrypt benchmark and the
provisioning / CMK API latency figures, with
the configuration printed beside the figures. ``--quick`` runs tiny settings (a smoke run, no figures to
quote); ``--json DIR`` also writes kmip_load.json, mongocrypt.json and provision.json there."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import kmip_load, mongocrypt, provision


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny settings: checks that everything runs")
    p.add_argument("--json", type=Path, default=None, help="directory for JSON results")
    p.add_argument("--profile", type=Path, default=None, help="py-spy profiles of our Get/Encrypt runs here")
    a = p.parse_args(argv)
    # Three extra Get pairs, real and null audit sink alternating: the audit overhead judged on their
    # median as well (one audit-then-null pair moved by +-5 points with the shared box's load).
    load_args: list[str] = ["--ab-rounds", "1" if a.quick else "3"]
    crypt_args: list[str] = []
    provision_args: list[str] = []
    if a.quick:
        load_args += [
            "--connections",
            "2",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--keys",
            "1",
            "--pykmip-connections",
            "1",
            "--pykmip-duration",
            "0.5",
            "--conn-duration",
            "0.3",
            "--conn-threads",
            "1",
        ]
        crypt_args += ["--rounds", "1", "--seconds", "0.3", "--uncached-seconds", "0.3"]
        provision_args += ["--tenants", "1", "--api-requests", "3", "--audit-events", "2000"]
    if a.json is not None:
        a.json.mkdir(parents=True, exist_ok=True)
        load_args += ["--json", str(a.json / "kmip_load.json")]
        crypt_args += ["--json", str(a.json / "mongocrypt.json")]
        provision_args += ["--json", str(a.json / "provision.json")]
    if a.profile is not None:
        load_args += ["--profile", str(a.profile)]
    kmip_load.main(load_args)
    print()
    mongocrypt.main(crypt_args)
    print()
    provision.main(provision_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
