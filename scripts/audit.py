"""Dependency audit: pip-audit over the installed environment.

Fails on any known vulnerability. pip-audit needs a vulnerability service (PyPI's
JSON API or OSV); where neither answers, every package comes back "not audited", and
this says so loudly instead of passing as if it had looked."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    run = subprocess.run(
        [
            str(ROOT / ".venv/bin/pip-audit"),
            "--local",
            "--format",
            "json",
            "--progress-spinner",
            "off",
        ],
        capture_output=True,
        text=True,
    )
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit did not run:\n{run.stderr[-2000:]}", file=sys.stderr)
        return 1
    deps = report.get("dependencies", [])
    audited = [d for d in deps if "skip_reason" not in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
            print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
    if not audited:
        print(
            f"WARNING: dependency audit could not look anything up ({len(deps)} packages, "
            "no vulnerability service reachable from this machine); nothing was checked.",
            file=sys.stderr,
        )
        return 0
    print(f"Dependency audit: {len(audited)} packages checked, {len(vulnerable)} vulnerable.")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
