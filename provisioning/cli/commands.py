"""The ``converge`` commands: where each lives and the first sentence of its help.

Each command lives in its own module and is listed once in ``COMMANDS`` as
``"name": "module:attribute"``, and in ``SUMMARIES`` by the first sentence of its help (a test
keeps each equal to the command's own help). Nothing here imports a command, nor click: the
top-level help (``provisioning.cli.help``) lists the commands from these two tables alone.
To add a command, add one line to each; its module imports what it needs at its top, since it
is imported only when its command runs.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "SUMMARIES", "QUICK"]

COMMANDS: dict[str, str] = {
    "up": "provisioning.cli.up:up",
    "plan": "provisioning.cli.plan_cmd:plan",
    "apply": "provisioning.cli.plan_cmd:apply",
    "stop": "provisioning.cli.stop:stop",
    "destroy": "provisioning.cli.destroy:destroy",
    "status": "provisioning.cli.status:status",
    "exec": "provisioning.cli.exec_cmd:exec_",
    "ssh": "provisioning.cli.ssh_cmd:ssh",
    "test": "provisioning.cli.test_cmd:test",
    "drivers": "provisioning.cli.drivers:drivers",
    "init": "provisioning.cli.init_cmd:init",
    "new-driver": "provisioning.cli.new_driver:new_driver",
    "watch": "provisioning.cli.watch:watch",
    "state": "provisioning.cli.state_cmd:state",
    "import": "provisioning.cli.import_cmd:import_",
    "config": "provisioning.cli.config_cmd:config",
    "snapshot": "provisioning.cli.snapshot_cmd:snapshot",
    "sync": "provisioning.cli.sync_cmd:sync",
    "image": "provisioning.cli.image_cmd:image",
    "create": "provisioning.cli.kitchen_cmd:create",
    "converge": "provisioning.cli.kitchen_cmd:converge_",
    "verify": "provisioning.cli.kitchen_cmd:verify",
    "list": "provisioning.cli.kitchen_cmd:list_",
    "login": "provisioning.cli.ssh_cmd:login",
    "output": "provisioning.cli.inventory_cmd:output",
    "inventory": "provisioning.cli.inventory_cmd:inventory",
    "schema": "provisioning.cli.schema_cmd:schema",
}

#: Commands ``provisioning.cli.quick`` runs without click when their command line is plain and
#: valid: name -> (the function the click command calls, as ``"module:attribute"``; the
#: command's own flags it reads, option -> keyword). A test keeps each flag equal to the click
#: command's; any other option of the command (``up --why-run``, ``up --replace``) or an
#: argument (``up web``) goes to the click group.
QUICK: dict[str, tuple[str, dict[str, str]]] = {
    "status": ("provisioning.cli.show_status:show_status",
               {"--refresh": "refresh", "--all-clusters": "all_clusters"}),
    "up": ("provisioning.cli.bring_up:bring_up", {}),
}

#: The first sentence of each command's help, so ``converge --help`` lists the commands without
#: importing their modules (a test keeps each equal to the command's own help). A command left
#: out here still shows: its module is imported for the listing.
SUMMARIES: dict[str, str] = {
    "config": "Inspect the layered configuration (defaults < ./provisioning.yml < "
              "$PROVISIONING_CONFIG < PROVISIONING_* environment variables < the cluster file and"
              " command line).",
    "destroy": "Destroy machines (all of the cluster's by default) and remove them from the state.",
    "drivers": "List driver schemes and the package providing each (or: drivers describe URL).",
    "exec": "Run COMMAND on MACHINE and pass its output and exit status through.",
    "image": "Build, list and destroy the cluster file's machine images (images:).",
    "import": "Adopt an existing resource as MACHINE of the cluster file: a cloud node id, an "
              "nspawn machine id, an ssh host[:port], a fake server id.",
    "init": "Ask for a driver URL and each of its options, checking every answer at once, and "
            "write a commented cluster file (-f, default cluster.yml).",
    "new-driver": "Write a driver package for scheme NAME: pyproject (entry point), a working "
                  "example driver, conformance tests, README and CI script.",
    "snapshot": "Save, restore, list and delete snapshots of a machine's files (local drivers).",
    "ssh": "Open an SSH session on MACHINE (or run COMMAND there: converge ssh web-1 -- uptime).",
    "state": "Export, import and inspect the state store (--state URL, or the cluster's).",
    "status": "Show each machine of this cluster: name, driver URL, state, address, last action, "
              "last error.",
    "plan": "Show what 'up' would do to each machine, changing nothing: create, start, converge "
            "(each step that would change, and why), replace, destroy (a lower count), or "
            "nothing.",
    "apply": "Do exactly what a saved plan says ('converge plan --out PLAN.json'), and nothing "
             "else.",
    "stop": "Stop machines (all by default); 'converge up' starts them again.",
    "sync": "Copy changed files of each machine's 'sync' folders to it (all machines by default).",
    "test": "Create, converge and verify instances, then destroy them (by default the passing "
            "ones).",
    "create": "Create and ready instances (no convergence).",
    "converge": "Create instances if needed and converge them (like 'up', recorded per "
                "instance).",
    "verify": "Run the verify entries of instances (converging those not created yet) and record "
              "the result per instance ('converge list' shows it).",
    "list": "List instances: driver, state, last action, last verify result and when.",
    "login": "Log in to INSTANCE (its first machine) over SSH: test-kitchen's name for 'ssh'.",
    "output": "Print the cluster file's outputs (all, or NAME's value alone), rendered with what "
              "the state knows now (addresses, facts).",
    "inventory": "Print an inventory that reaches every created machine with its pinned host key.",
    "schema": "Print the JSON Schema of cluster files, for editors (docs/cluster-file.md, "
              "\"Editor support\").",
    "up": "Create (if needed), ready, converge and healthcheck machines (all by default), and "
          "destroy the machines a lowered count leaves out.",
    "watch": "Watch machines and mend them: re-create one that is missing (or was deleted behind "
             "our back) and replace one whose healthchecks fail for longer than --grace (destroy,"
             " then create anew).",
}
