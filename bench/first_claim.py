"""Run ``converge`` with the arguments given, as the console script would, and end the process
(exit status 0) when it first asks its PostgreSQL state for a claim: what a runner spends before
it can start its first machine. ``bench/startup.py --first-claim`` counts its instructions.

    python3 bench/first_claim.py -f cluster.yml --state postgresql://... up --parallel 10

Only ``WorkSplit.claim`` is changed, once ``provisioning.cluster.claims`` has been imported the
usual way (a finder on ``sys.meta_path`` that defers to the normal one): everything before the
first claim runs and loads exactly as in a runner.
"""

import os
import sys
from importlib.machinery import PathFinder

CLAIMS = "provisioning.cluster.claims"


def _stop(*_args, **_kwargs):
    sys.stdout.flush()
    os._exit(0)


class _StopAtFirstClaim:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != CLAIMS:
            return None
        spec = PathFinder.find_spec(name, path, target)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.WorkSplit.claim = _stop
        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _StopAtFirstClaim)
from provisioning.cli.main import main  # noqa: E402 - after the finder is in place

sys.exit(main())  # no argument: as the console script calls it (it reads sys.argv)
