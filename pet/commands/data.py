"""Data commands: validate, import, export, stats, versions, restore, name."""

from __future__ import annotations

import json
import sys
import time

from pet import PetError
from pet.commands import add, engine
from pet.dataset import MAX_SEQ_LEN

SHOW = 200  # problems printed as text; --json lists them all
FORMAT_CHOICES = ("auto", "messages", "alpaca", "sharegpt", "chatml", "csv")


def register(sub) -> None:
    p = add(sub, "data", lambda a: a._parser.error("choose a data command"), help="training examples: validate, "
            "import, export, stats, versions")
    dsub = p.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=type(p))
    dsub.required = True

    q = add(dsub, "validate", cmd_validate, help="check a file: exit 0 if it can be imported, 1 with every problem")
    q.add_argument("path")
    q.add_argument("--format", default="auto", choices=FORMAT_CHOICES, help="input format (default: detect)")
    _column_flags(q)
    q.add_argument("--cutoff", type=int, default=MAX_SEQ_LEN, help="training cutoff in tokens, the tier's system "
                   f"prompt included, for over-long warnings (default: the trainer's max_seq_len, {MAX_SEQ_LEN})")
    q.add_argument("--json", action="store_true", help="print the result as JSON")

    q = add(dsub, "import", cmd_import, help="import a file as a new version (nothing changes if it has errors)")
    q.add_argument("path")
    q.add_argument("--format", default="auto", choices=FORMAT_CHOICES, help="input format (default: detect)")
    q.add_argument("--replace", action="store_true", help="replace the dataset instead of appending to it")
    q.add_argument("--skip-bad", action="store_true", help="import the good rows of a file that has bad ones "
                   "(each skipped row is listed)")
    _column_flags(q)

    q = add(dsub, "export", cmd_export, help="write the dataset (or one version) in a format")
    q.add_argument("--format", required=True, choices=("jsonl", "csv", "alpaca", "sharegpt"))
    q.add_argument("--out", required=True, help="file to write")
    q.add_argument("--version", help="version number or name (default: the latest)")

    q = add(dsub, "stats", cmd_stats, help="examples, tag balance and token lengths")
    q.add_argument("--version", help="version number or name (default: the latest)")
    q.add_argument("--cutoff", type=int, default=MAX_SEQ_LEN, help="training cutoff in tokens, the tier's system "
                   f"prompt included (default: the trainer's max_seq_len, {MAX_SEQ_LEN})")
    q.add_argument("--json", action="store_true", help="print the result as JSON")

    q = add(dsub, "versions", cmd_versions, help="list the saved versions, newest first")
    q.add_argument("--json", action="store_true")

    q = add(dsub, "restore", cmd_restore, help="make an earlier version the latest (as a new version)")
    q.add_argument("version", help="version number or name")

    q = add(dsub, "name", cmd_name, help="name a version (an empty name removes it)")
    q.add_argument("version", help="version number")
    q.add_argument("name")


def _column_flags(q) -> None:
    q.add_argument("--request-column", metavar="NAME", help="CSV: the column holding the request "
                   "(default: recognised from the header)")
    q.add_argument("--answer-column", metavar="NAME", help="CSV: the column holding the answer "
                   "(default: recognised from the header)")


def _columns(args) -> dict | None:
    cols = {"request": args.request_column, "answer": args.answer_column}
    return cols if any(cols.values()) else None


def _datastore(eng=None):
    from pet.datastore import DatasetStore

    eng = eng or engine()
    return DatasetStore(eng.store)


def _lengths(eng):
    from pet.dataset import Lengths

    return Lengths(eng)


def _cutoff(args) -> int:
    if not 16 <= args.cutoff <= 131072:
        args._parser.error(f"argument --cutoff: must be between 16 and 131072, got {args.cutoff}")
    return args.cutoff


def cmd_validate(args) -> int:
    from pet.dataset import validate_file

    cutoff = _cutoff(args)
    eng = engine()
    res = validate_file(args.path, args.format, _lengths(eng), cutoff, columns=_columns(args))
    if args.json:
        print(json.dumps(res.as_dict(), indent=2, ensure_ascii=False))
        return 0 if res.ok else 1
    for w in res.warnings:
        print(f"warning: {w}")
    if res.ok:
        print(f"ok: {len(res.examples)} example(s) in {res.format} format, {len(res.warnings)} warning(s)")
        return 0
    for e in res.errors[:SHOW]:
        print(f"error: {e}", file=sys.stderr)
    if len(res.errors) > SHOW:
        print(f"... and {len(res.errors) - SHOW} more (use --json to see them all)", file=sys.stderr)
    print(f"{args.path}: cannot be imported: {len(res.errors)} problem(s)", file=sys.stderr)
    return 1


def cmd_import(args) -> int:
    from pet.dataset import DatasetError, parse_file

    res = parse_file(args.path, args.format, columns=_columns(args))
    if not res.ok and not (args.skip_bad and res.partly_ok):
        if res.partly_ok:
            print(f"{len(res.examples)} good row(s) could be imported alone: add --skip-bad", file=sys.stderr)
        raise DatasetError(res.errors, f"{args.path}")
    for w in res.warnings:
        print(f"warning: {w}")
    for e in res.errors:
        print(f"skipped: {e}", file=sys.stderr)
    ds = _datastore()
    note = f"imported {len(res.examples)} from {args.path.rsplit('/', 1)[-1]}"
    if res.errors:
        note += f" (skipped {len(res.bad_rows)} bad row(s))"
    if args.replace:
        base, _ = ds.current()
        v = ds.save(res.examples, base, note + " (replace)")
    else:
        v = ds.add(res.examples, note)
    print(f"version {v}: {note} ({res.format}); the dataset now has {ds.versions()[0]['examples']} example(s)")
    return 0


def _version(ds, args) -> int:
    return ds.find(args.version) if args.version else ds.latest()


def cmd_export(args) -> int:
    from pet.dataset import export

    ds = _datastore()
    v = _version(ds, args)
    examples = ds.get(v)
    path = export(examples, args.format, args.out)
    print(f"wrote {len(examples)} example(s) of version {v} as {args.format} to {path}")
    return 0


def cmd_stats(args) -> int:
    from pet.dataset import stats

    cutoff = _cutoff(args)
    eng = engine()
    ds = _datastore(eng)
    v = _version(ds, args)
    lengths = _lengths(eng)
    st = stats(ds.get(v), lengths, cutoff, ds.token_lengths(v, lengths))
    st["version"] = v
    if args.json:
        print(json.dumps(st, indent=2, ensure_ascii=False))
        return 0
    t = st["tokens"]
    est = "" if t["exact"] else " (estimated: tokenizer unavailable)"
    print(f"version {v}: {st['examples']} examples ({st['train']} train, {st['heldout']} held out)")
    print(f"tokens{est}: min {t['min']}, median {t['median']}, p90 {t['p90']}, max {t['max']}; "
          f"{t['over_cutoff']} over the cutoff of {t['cutoff']}")
    print("length: " + ", ".join(f"{h['from']}-{h['to']}: {h['count']}" for h in t["histogram"] if h["count"]))
    for title, key in (("domains", "domains"), ("techniques", "techniques"), ("languages", "languages"),
                       ("points of view", "povs"), ("request styles", "styles"), ("turns", "turns")):
        print(f"{title}:")
        for tag, n in st[key].items():
            print(f"  {tag:<24} {n:>5}  {'#' * max(1, round(40 * n / max(1, st['examples'])))}")
    return 0


def cmd_versions(args) -> int:
    rows = _datastore().versions()
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"]))
        name = f" [{r['name']}]" if r["name"] else ""
        print(f"{r['id']:>5}{name}  {when}  {r['examples']:>6} examples  {r['note']}")
    return 0


def cmd_restore(args) -> int:
    ds = _datastore()
    old = ds.find(args.version)
    v = ds.restore(old)
    print(f"version {v}: restored version {old} ({len(ds.get(v))} examples); nothing was deleted")
    return 0


def cmd_name(args) -> int:
    ds = _datastore()
    if not args.version.isdigit():
        raise PetError(f"version must be a number, got {args.version!r}")
    ds.name_version(int(args.version), args.name)
    print(f"version {args.version} is now named {args.name!r}" if args.name.strip()
          else f"version {args.version} has no name now")
    return 0
