"""The validation report: what a validate stage prints, writes and exits with.

A validate stage runs its own checks on its own data and hands them here as
`{"check": name, "ok": bool, "detail": text}`. The report prints one aligned line per check
(`ok` or `FAIL`), writes report.json and the metrics (with `checks` and `checks_failed`), and
exits 1 when a check failed, so nothing downstream learns from a broken export.
"""

from vishwa_ml.io_paths import write_json, write_metrics


def check(name, ok, detail=""):
    """One check's result; `detail` says what is wrong (and where) when it failed."""
    return {"check": name, "ok": bool(ok), "detail": detail}


def report(title, checks, summary=None, metrics=None, on_failure="", on_success=""):
    """Prints and records `checks`; raises SystemExit(1) when any failed.

    `summary` joins the checks in report.json, `metrics` in metrics.json; `on_failure` and
    `on_success` end the last line (e.g. what to do about a failure)."""
    if not checks:
        raise ValueError("a validation report needs at least one check")
    failed = [c for c in checks if not c["ok"]]
    print(title)
    width = max(len(c["check"]) for c in checks)
    for c in checks:
        mark = "ok  " if c["ok"] else "FAIL"
        print(f"  {mark}  {c['check']:<{width}}  {c['detail']}".rstrip())
    write_json("report.json", {**(summary or {}), "checks": checks})
    write_metrics({**(metrics or {}), "checks": len(checks), "checks_failed": len(failed)})
    if failed:
        print(f"validation failed: {len(failed)} of {len(checks)} checks failed{on_failure}")
        raise SystemExit(1)
    print(f"validation passed: {len(checks)} checks{on_success}")
