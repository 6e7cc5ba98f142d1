"""The ``hybrid-dagster`` command line.

Example:
    .. code-block:: shell

        hybrid-dagster validate -m clinical_ai.definitions
        hybrid-dagster validate -f pipelines/defs.py -a defs
        hybrid-dagster cdc run --spec job.json --plane plane.json
        hybrid-dagster access render -f defs/access/defs.yaml --out access-out
        hybrid-dagster access apply -f defs/access/defs.yaml --vault-addr https://bao.example.org
        hybrid-dagster audit verify --url sqlite:///$DAGSTER_HOME/hybrid_audit.db
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import dagster as dg

from hybrid_dagster._dagster_compat import LazyDefinitions, load_python_file, load_python_module
from hybrid_dagster.audit import AuditError, AuditLog
from hybrid_dagster.audit.checkpoint import latest_checkpoint
from hybrid_dagster.cdc.worker import DEFAULT_MAX_SECONDS, SPEC_EXAMPLE, CdcJobSpec, resnapshot
from hybrid_dagster.errors import DefinitionsLoadError as DefinitionsLoadError
from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.validation import ResidencyCheckFailed, ResidencyReport, validate_definitions

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_LOAD_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 1 residency violations, 2 load or usage error).

    Example:
        >>> main(["validate", "-m", "clinical_ai.definitions"])
        residency ok: 12 assets on 4 planes in 2 jurisdictions, 1 declared route
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    return command(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand registers its handler as ``command``."""
    parser = argparse.ArgumentParser(
        prog="hybrid-dagster", description="Residency tooling for hybrid-cloud Dagster pipelines."
    )
    subcommands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    _add_validate(subcommands)
    _add_cdc(subcommands)
    _add_access(subcommands)
    _add_audit(subcommands)
    return parser


def _add_access(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    access = subcommands.add_parser("access", help="Access tiers as code: render and apply.")
    actions = access.add_subparsers(title="access commands", required=True, metavar="ACTION")
    render = actions.add_parser(
        "render",
        help="Write Vault/OpenBao policies and roles, Kubernetes RBAC and AWS IAM policies.",
        description="Render every artifact of the access declaration into a folder (manifests validated).",
    )
    apply = actions.add_parser(
        "apply",
        help="Apply the Vault/OpenBao part to a server (shows the diff first; idempotent).",
        description="Print the changes, then make them (unless --dry-run). Reads the token from --token-env.",
    )
    for action in (render, apply):
        source = action.add_mutually_exclusive_group(required=True)
        source.add_argument("-m", "--module-name", help="Python module holding an AccessTiers object.")
        source.add_argument("-f", "--yaml-file", help="YAML file: an AccessTiersComponent defs.yaml.")
        action.add_argument("-a", "--attribute", help="Attribute holding the AccessTiers (with -m).")
    render.add_argument("--out", required=True, help="Folder to write into.")
    render.set_defaults(command=_access_render)
    apply.add_argument("--vault-addr", default=os.environ.get("VAULT_ADDR"), help="Default: $VAULT_ADDR.")
    apply.add_argument("--token-env", default="VAULT_TOKEN", help="Variable holding an admin token.")
    apply.add_argument("--dry-run", action="store_true", help="Only show the changes.")
    apply.add_argument(
        "--no-kubernetes", action="store_true", help="Skip the Kubernetes auth method and its roles."
    )
    apply.set_defaults(command=_access_apply)


def _access_render(args: argparse.Namespace) -> int:
    from hybrid_dagster.access import AccessDeclarationError, load_access, render_all

    try:
        access = load_access(module_name=args.module_name, attribute=args.attribute, yaml_file=args.yaml_file)
    except (AccessDeclarationError, ValueError) as exc:
        print(f"hybrid-dagster: {exc}", file=sys.stderr)
        return EXIT_LOAD_ERROR
    written = render_all(access, Path(args.out))
    roles, planes = len(access.roles()), len(access.planes)
    print(f"access: {len(written)} files for {roles} roles on {planes} planes in {args.out}")
    return EXIT_OK


def _access_apply(args: argparse.Namespace) -> int:
    import hvac

    from hybrid_dagster.access import AccessDeclarationError, apply_vault, load_access, plan_vault

    try:
        access = load_access(module_name=args.module_name, attribute=args.attribute, yaml_file=args.yaml_file)
    except (AccessDeclarationError, ValueError) as exc:
        print(f"hybrid-dagster: {exc}", file=sys.stderr)
        return EXIT_LOAD_ERROR
    token = os.environ.get(args.token_env)
    if not args.vault_addr or not token:
        print(
            f"hybrid-dagster: give --vault-addr (or VAULT_ADDR) and a token in ${args.token_env}",
            file=sys.stderr,
        )
        return EXIT_LOAD_ERROR
    client = hvac.Client(url=args.vault_addr, token=token)
    kubernetes = not args.no_kubernetes
    changes = plan_vault(client, access, kubernetes=kubernetes)
    for change in changes:
        print(change)
    if not changes:
        print(f"access: {args.vault_addr} is in line with the declaration, nothing to do")
        return EXIT_OK
    if args.dry_run:
        print(f"access: {len(changes)} changes (dry run, nothing written)")
        return EXIT_OK
    applied = apply_vault(client, access, kubernetes=kubernetes)
    print(f"access: {len(applied)} changes applied to {args.vault_addr}")
    return EXIT_OK


def _add_audit(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = subcommands.add_parser("audit", help="The tamper-evident audit log.")
    actions = audit.add_subparsers(title="audit commands", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="Check the whole hash chain; exit 0 when intact, 1 naming the first broken record.",
        description="Also compares against the latest audit_checkpoint in DAGSTER_HOME, if any.",
    )
    verify.add_argument("--url", help="SQLAlchemy URL of the store (default: $DAGSTER_HOME/hybrid_audit.db).")
    verify.add_argument(
        "--no-checkpoint", action="store_true", help="Do not compare against the Dagster event log."
    )
    verify.set_defaults(command=_audit_verify)


def _audit_verify(args: argparse.Namespace) -> int:
    try:
        log = AuditLog(args.url)
    except AuditError as exc:
        print(f"hybrid-dagster: {exc}", file=sys.stderr)
        return EXIT_LOAD_ERROR
    checkpoint = None
    if not args.no_checkpoint and os.environ.get("DAGSTER_HOME"):
        with dg.DagsterInstance.get() as instance:
            checkpoint = latest_checkpoint(instance)
    with log:
        result = log.verify(checkpoint=checkpoint)
    print(result.describe() + (f" (checked against checkpoint of {checkpoint[0]})" if checkpoint else ""))
    return EXIT_OK if result.ok else EXIT_VIOLATIONS


def _add_cdc(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cdc = subcommands.add_parser("cdc", help="Change data capture into Iceberg, run by hand inside a plane.")
    actions = cdc.add_subparsers(title="cdc commands", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="Stream a source into its Iceberg tables until drained; print the report as JSON.",
        description="The same work the CDC assets start through Dagster Pipes, from a JSON job spec.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_CDC_RUN_EPILOG.format(
            spec=json.dumps(SPEC_EXAMPLE, indent=2), max_seconds=DEFAULT_MAX_SECONDS
        ),
    )
    run.add_argument("--spec", required=True, help="JSON job spec file (example below).")
    run.add_argument("--plane", help="JSON plane config (default: HYBRID_DAGSTER_PLANE in the environment).")
    run.add_argument(
        "--follow",
        action="store_true",
        help="Long-running mode: keep applying small batches (the spec's 'follow', else its defaults).",
    )
    run.add_argument(
        "--target-latency", type=float, help="Follow mode: target end-to-end latency in seconds."
    )
    run.add_argument("--follow-seconds", type=float, help="Follow mode: stop after this many seconds.")
    run.set_defaults(command=_cdc_run)
    resnap = actions.add_parser(
        "resnapshot",
        help="Copy one table of a CDC job afresh on its next run (the job's other tables keep streaming).",
        description=(
            "Empties the Iceberg table in one commit marked as a copy of the job's source; the next "
            "'cdc run' (or asset materialization) copies the source table chunk by chunk at a new "
            "consistent point and streams on from there. See docs/cdc.md, section 'Snapshots'."
        ),
    )
    resnap.add_argument("--spec", required=True, help="JSON job spec file (as for 'cdc run').")
    resnap.add_argument("--table", required=True, help="Iceberg table of the job, e.g. clinical.patients")
    resnap.add_argument(
        "--plane", help="JSON plane config (default: HYBRID_DAGSTER_PLANE in the environment)."
    )
    resnap.set_defaults(command=_cdc_resnapshot)


_CDC_RUN_EPILOG = """\
job spec example (job.json):
{spec}

  source        one of kind postgres | debezium | debezium_kafka | sql_triggers (see docs/cdc.md);
                secrets come from environment variables inside the plane (dsn_env, url_env)
  tables        data_jurisdictions is required: where the source rows are (never assumed)
  defaults      dead_letter_table <namespace>._dead_letters ("dead_letter_table": null for none),
                dead_letter_policy continue, max_seconds {max_seconds:g} (null: until drained),
                changelog true, batch_events 50000

plane (--plane plane.json, or the JSON in $HYBRID_DAGSTER_PLANE):
  {{"name": "eu-onprem", "jurisdiction": "EU", "region": "fra-dc2", "location": "on_prem",
   "warehouse": "file:///srv/eu/warehouse"}}

read the tables back: DataPlane.from_config(plane).load_catalog().load_table("clinical.patients")
"""


def _cdc_run(args: argparse.Namespace) -> int:
    from hybrid_dagster.cdc import worker

    argv = ["--spec", args.spec, *(["--plane", args.plane] if args.plane else [])]
    if args.follow:
        argv.append("--follow")
    if args.target_latency is not None:
        argv += ["--target-latency", str(args.target_latency)]
    if args.follow_seconds is not None:
        argv += ["--follow-seconds", str(args.follow_seconds)]
    return worker.main(argv)


def _cdc_resnapshot(args: argparse.Namespace) -> int:
    spec = CdcJobSpec.model_validate_json(Path(args.spec).read_text())
    plane = (
        DataPlane.from_config(json.loads(Path(args.plane).read_text()))
        if args.plane
        else DataPlane.from_env()
    )
    print(json.dumps(resnapshot(spec, plane, args.table)))
    return 0


def _add_validate(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = subcommands.add_parser(
        "validate",
        help="Check the residency of every asset in a Definitions object.",
        description="Exit 0 when residency holds, 1 with one line per violation, 2 when loading fails.",
    )
    target = validate.add_mutually_exclusive_group(required=True)
    target.add_argument("-m", "--module-name", help="Python module holding the Definitions.")
    target.add_argument("-f", "--python-file", help="Python file holding the Definitions.")
    validate.add_argument(
        "-a", "--attribute", help="Attribute holding the Definitions (default: the only Definitions object)."
    )
    validate.add_argument(
        "-d", "--working-directory", default=None, help="Directory added to sys.path (default: cwd)."
    )
    validate.set_defaults(command=_validate)


def _validate(args: argparse.Namespace) -> int:
    try:
        defs = load_definitions(
            module_name=args.module_name,
            python_file=args.python_file,
            attribute=args.attribute,
            working_directory=args.working_directory,
        )
        report = validate_definitions(defs)
    except ResidencyCheckFailed as failed:
        report = failed.report
    except DefinitionsLoadError as exc:
        print(f"hybrid-dagster: {exc}", file=sys.stderr)
        return EXIT_LOAD_ERROR
    return _print_report(report)


def _print_report(report: ResidencyReport) -> int:
    for line in report.lines():
        print(line)
    if report.ok:
        return EXIT_OK
    print(report.summary(), file=sys.stderr)
    return EXIT_VIOLATIONS


def load_definitions(
    *,
    module_name: str | None = None,
    python_file: str | None = None,
    attribute: str | None = None,
    working_directory: str | None = None,
) -> dg.Definitions:
    """Load a ``Definitions`` object the way ``dagster definitions validate`` finds one.

    The attribute named by ``attribute``, else the only module-level ``Definitions`` object, else the only
    ``@dg.definitions`` function, else ``defs``. A :class:`ResidencyCheckFailed` raised while importing (a
    module using ``enforce_residency``) propagates; every other failure becomes
    :class:`DefinitionsLoadError`.

    Example:
        >>> load_definitions(module_name="clinical_ai.definitions")
    """
    if (module_name is None) == (python_file is None):
        raise DefinitionsLoadError("give exactly one of a module name (-m) or a python file (-f)")
    where = f"module {module_name!r}" if module_name is not None else f"file {python_file!r}"
    cwd = working_directory or os.getcwd()
    try:
        if module_name is not None:
            module = load_python_module(module_name, working_directory=cwd)
        else:
            assert python_file is not None
            module = load_python_file(python_file, working_directory=cwd)
    except ResidencyCheckFailed:
        raise
    except Exception as exc:
        raise DefinitionsLoadError(f"could not load {where}: {type(exc).__name__}: {exc}") from exc
    return _find_definitions(module, where, attribute)


def _find_definitions(module: ModuleType, where: str, attribute: str | None) -> dg.Definitions:
    if attribute is not None:
        if not hasattr(module, attribute):
            raise DefinitionsLoadError(f"{where} has no attribute {attribute!r}")
        return _as_definitions(getattr(module, attribute), f"{where}, attribute {attribute!r}")
    members = inspect.getmembers(module)
    for kind in (dg.Definitions, LazyDefinitions):
        found = [name for name, value in members if isinstance(value, kind)]
        if len(found) > 1:
            raise DefinitionsLoadError(
                f"{where} has several {kind.__name__} objects ({', '.join(found)}): choose one with -a"
            )
        if found:
            return _as_definitions(getattr(module, found[0]), f"{where}, attribute {found[0]!r}")
    if hasattr(module, "defs"):
        return _as_definitions(module.defs, f"{where}, attribute 'defs'")
    raise DefinitionsLoadError(f"{where} has no Definitions object (expected a module-level Definitions)")


def _as_definitions(value: object, where: str) -> dg.Definitions:
    if isinstance(value, LazyDefinitions):
        try:
            value = value()
        except ResidencyCheckFailed:
            raise
        except Exception as exc:
            raise DefinitionsLoadError(f"could not build {where}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(value, dg.Definitions):
        raise DefinitionsLoadError(f"{where} is a {type(value).__name__}, not a dagster Definitions object")
    return value


if __name__ == "__main__":
    sys.exit(main())
