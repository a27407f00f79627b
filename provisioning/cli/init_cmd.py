"""``converge init``: the wizard that writes a cluster file (see ``provisioning.scaffold.wizard``)."""

from __future__ import annotations

import json
import os
import sys

import click

from provisioning.cli.common import common_options, pass_settings
from provisioning.config import Config
from provisioning.errors import ConfigError
from provisioning.scaffold.wizard import (
    AnswerSource,
    FileAnswers,
    InitWizard,
    TerminalAnswers,
    load_answers,
    write_init_outputs,
)

__all__ = ["init"]


@click.command("init")
@click.option("--answers", metavar="FILE", type=click.Path(dir_okay=False),
              help="Answers as YAML or JSON (driver, driver_options, machine, count, "
                   "machine_options): run without a terminal.")
@click.option("--driver", "driver_default", metavar="URL", default=None,
              help="Driver URL offered as the first answer's default.")
@click.option("--config-file", metavar="FILE", default=None,
              help="Where secrets go, under credentials: (default: provisioning.yml beside the "
                   "cluster file, mode 0600).")
@click.option("--force", is_flag=True, help="Replace an existing cluster file.")
@common_options
@pass_settings
def init(settings, answers: str | None, driver_default: str | None, config_file: str | None,
         force: bool) -> int:
    """Ask for a driver URL and each of its options, checking every answer at once, and write
    a commented cluster file (-f, default cluster.yml). Secrets never go into it."""
    cluster_path = os.path.abspath(settings.file)
    base_dir = os.path.dirname(cluster_path)
    config_path = os.path.abspath(config_file or os.path.join(base_dir, "provisioning.yml"))
    if os.path.exists(cluster_path) and not force:
        raise ConfigError(f"{settings.file} already exists; pass --force to replace it, or "
                          "-f OTHER.yml to write another file", file=settings.file)
    source: AnswerSource
    if answers is not None:
        source = FileAnswers(load_answers(answers), file=answers)
    elif sys.stdin.isatty():
        source = TerminalAnswers()
        click.echo("converge init: answer each question (Enter keeps the [default]).")
    else:
        raise ConfigError("converge init asks questions on a terminal, and stdin is not one; "
                          "pass --answers FILE to answer from a YAML or JSON file", key="--answers")
    config = Config.load(cwd=base_dir)
    result = InitWizard(source, config, default_driver=driver_default).run()
    written = write_init_outputs(result, cluster_path, config_path, force=force)
    if settings.json:
        click.echo(json.dumps({"event": "init", "cluster_file": written[0],
                               "credentials_file": written[1] if len(written) > 1 else None,
                               "driver": result.driver_url, "machine": result.machine,
                               "count": result.count}))
        return 0
    click.echo(f"wrote {written[0]}")
    if len(written) > 1:
        click.echo(f"secrets ({', '.join(result.credentials)}) saved in {written[1]} "
                   "(mode 0600), not in the cluster file")
    click.echo("next: converge up --why-run")
    return 0
