"""One launcher of the whole stack, for `accord up`, the benchmarks and end-to-end tests.

    with Stack(workdir, env=os.environ, replicas={"executor": 3}) as stack:
        stack.target("orchestrator")        # "127.0.0.1:<port>"
        stack.kill("executor", replica=1)   # SIGKILL; the supervisor restarts it
        stack.wait_serving("executor")
        stack.restart_nats()

plan.py says which processes run where, supervisor.py keeps them running, health.py
waits for them, launcher.py puts it together with PostgreSQL and NATS.
"""

from accord_kit.stack.launcher import PortInUse, Stack, say_on_stderr
from accord_kit.stack.plan import MIGRATING, SERVICES, Instance
from accord_kit.stack.supervisor import RestartPolicy, StackError

__all__ = [
    "MIGRATING",
    "SERVICES",
    "Instance",
    "PortInUse",
    "RestartPolicy",
    "Stack",
    "StackError",
    "say_on_stderr",
]
