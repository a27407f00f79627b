"""``converge image build|list|destroy [NAME]...``: the cluster file's machine images."""

from __future__ import annotations

import click

from provisioning.cli.common import common_options, pass_settings, why_run_option


@click.group()
def image() -> None:
    """Build, list and destroy the cluster file's machine images (images:)."""


def _summary(session, command: str, images: dict, verb: str) -> int:
    why_run = session.runner.why_run
    lines = [f"{'planned' if why_run else command}: {len(images)} "
             f"image{'s' if len(images) != 1 else ''}"]
    lines += [f"  {name}: {value}" for name, value in images.items()]
    session.renderer.message("\n".join(lines), record={
        "event": "summary", "command": command, "ok": True, "why_run": why_run,
        "images": images})
    return 0


@image.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--force", is_flag=True, help="Build even when the image is up to date.")
@common_options
@why_run_option
@pass_settings
def build(settings, names: tuple[str, ...], force: bool) -> int:
    """Build images (all by default) whose definition changed or that were never built."""
    with settings.session(images=names) as session:
        built = session.cluster.build_images(names, force=force)
        return _summary(session, "image build", {n: i or "(would be built)" for n, i in
                                                 built.items()}, "built")


@image.command(name="list")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@common_options
@pass_settings
def list_(settings, names: tuple[str, ...]) -> int:
    """List images: state (built, outdated, missing, not built), key, id, build time."""
    import time

    with settings.session(live=False, boots=False, images=names) as session:
        rows = session.cluster.image_status(names)
        shown = [dict(r, built_at=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(
            r["built_at"])) if r["built_at"] else "-", build_seconds=(
            f"{r['build_seconds']:g} s" if r["build_seconds"] is not None else "-"),
            image_id=r["image_id"] or "-") for r in rows]
        session.renderer.table(("NAME", "STATE", "KEY", "IMAGE ID", "BUILT", "BUILD TIME"),
                               shown, ("name", "state", "key", "image_id", "built_at",
                                       "build_seconds"), {"event": "images", "images": rows})
    return 0


@image.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@common_options
@why_run_option
@pass_settings
def destroy(settings, names: tuple[str, ...]) -> int:
    """Destroy images (all saved ones by default) and forget them."""
    with settings.session(boots=False) as session:  # a name the file dropped still goes
        done = session.cluster.destroy_images(names)
        return _summary(session, "image destroy", {n: "destroyed" for n in done}, "destroyed")
