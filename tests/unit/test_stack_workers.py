"""The stack's Celery workers across `up` and `down`, without starting anything: `down`
stops every worker that has a pid file (whatever the settings say now) before the other
services, `up` stops the workers it no longer runs, and a running stack keeps its backend,
executor and queues. The processes are fakes that record their stops."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlops_lib.settings import DEFAULT_QUEUE, TRAINING_QUEUE, Settings, load_settings
from mlops_lib.stack import manager, redis
from mlops_lib.stack.procs import StackError

# No MLOPS_* variable nor .env file of the caller reaches the settings.
pytestmark = pytest.mark.usefixtures("isolated_environment")


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "stack_dir": tmp_path / "stack",
        "host": "127.0.0.1",
        "backend": "postgres",
        "executor": "celery",
        "celery_workers": 2,
        "redis_password": "x",
    }
    return load_settings(**(values | overrides))


def _worker(i: int) -> str:
    return f"{manager.WORKER_PREFIX}{i}"


@dataclass
class Processes:
    """Fake managed processes: which run, and the order in which they were stopped."""

    running: set[str] = field(default_factory=set)
    stopped: list[str] = field(default_factory=list)


class FakeProcess:
    def __init__(self, processes: Processes, name: str) -> None:
        self.processes = processes
        self.name = name

    def is_running(self) -> bool:
        return self.name in self.processes.running

    def read_pid(self) -> int | None:
        return 4242 if self.is_running() else None

    def stop(self) -> str:
        self.processes.stopped.append(self.name)
        was_running = self.is_running()
        self.processes.running.discard(self.name)
        return "stopped" if was_running else "not running"


@pytest.fixture
def procs(monkeypatch: pytest.MonkeyPatch) -> Processes:
    processes = Processes()
    monkeypatch.setattr(manager, "_proc", lambda settings, name: FakeProcess(processes, name))
    return processes


def _pid_files(settings: Settings, *names: str) -> None:
    """Pid files as an earlier `up` leaves them (their content is the fakes' business)."""
    run = settings.stack_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    for name in names:
        (run / f"{name}.pid").write_text(json.dumps({"pid": 4242, "start_time": "0"}))


def _record(settings: Settings, **choices: object) -> None:
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    (settings.stack_dir / manager.STATE_FILE).write_text(json.dumps(choices))


CELERY_STACK = {
    "backend": "postgres",
    "executor": "celery",
    "celery_workers": 3,
    "celery_queues": f"{DEFAULT_QUEUE},{TRAINING_QUEUE}",
}


# 1. down ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "now",
    [
        {"celery_workers": 3},
        {"celery_workers": 1},
        {"executor": "local"},
        {"executor": "local", "backend": "sqlite"},
    ],
    ids=["same-workers", "fewer-workers", "local-executor", "local-on-sqlite"],
)
def test_down_stops_every_worker_with_a_pid_file_before_the_other_services(
    tmp_path: Path, procs: Processes, now: dict[str, object]
) -> None:
    settings = _settings(tmp_path, **now)
    workers = [_worker(i) for i in (1, 2, 3)]
    _pid_files(settings, *workers, "redis", "postgres")
    procs.running |= {*workers, "redis", "postgres", "airflow-scheduler"}

    result = manager.down(settings, log=lambda line: None)

    assert sorted(procs.stopped[:3]) == workers  # the workers first, all of them
    assert procs.stopped[3:] == list(reversed(manager.SERVICE_NAMES))
    assert procs.stopped.index("airflow-scheduler") < procs.stopped.index("redis")
    assert procs.stopped.index("redis") < procs.stopped.index("postgres")
    assert procs.running == set()
    assert {result[w] for w in workers} == {"stopped"}


def test_down_runs_the_hooks_before_stopping_anything(tmp_path: Path, procs: Processes) -> None:
    settings = _settings(tmp_path)
    _pid_files(settings, _worker(1))
    seen: list[list[str]] = []
    hooks = manager.StackHooks(before_down=lambda s, log: seen.append(list(procs.stopped)))

    manager.down(settings, log=lambda line: None, hooks=hooks)

    assert seen == [[]]
    assert procs.stopped[0] == _worker(1)


def test_down_without_worker_pid_files_stops_only_the_services(
    tmp_path: Path, procs: Processes
) -> None:
    settings = _settings(tmp_path, celery_workers=4)
    result = manager.down(settings, log=lambda line: None)
    assert procs.stopped == list(reversed(manager.SERVICE_NAMES))
    assert not [name for name in result if name.startswith(manager.WORKER_PREFIX)]


def test_the_started_workers_are_read_from_the_pid_files_only(tmp_path: Path) -> None:
    settings = _settings(tmp_path, celery_workers=1)
    _pid_files(settings, _worker(2), _worker(5), "redis", "airflow-scheduler")
    (settings.stack_dir / "run" / f"{_worker(7)}.log").write_text("")
    assert manager._started_workers(settings) == [_worker(2), _worker(5)]


# 2. surplus workers -------------------------------------------------------------------


def test_up_with_fewer_workers_stops_those_beyond_the_number_and_keeps_the_others(
    tmp_path: Path, procs: Processes
) -> None:
    settings = _settings(tmp_path, celery_workers=2)
    workers = [_worker(i) for i in (1, 2, 3, 4)]
    _pid_files(settings, *workers)
    procs.running |= set(workers)
    said: list[str] = []

    manager._stop_surplus_workers(settings, said.append)

    assert sorted(procs.stopped) == [_worker(3), _worker(4)]
    assert procs.running == {_worker(1), _worker(2)}
    assert len(said) == 2 and all("not in this stack" in line for line in said)


def test_the_local_executor_stops_every_worker_of_an_earlier_celery_stack(
    tmp_path: Path, procs: Processes
) -> None:
    settings = _settings(tmp_path, executor="local", celery_workers=3)
    workers = [_worker(i) for i in (1, 2, 3)]
    _pid_files(settings, *workers)
    procs.running |= set(workers)

    manager._stop_surplus_workers(settings, lambda line: None)

    assert sorted(procs.stopped) == workers
    assert procs.running == set()


def test_as_many_workers_as_before_stops_none_and_a_dead_surplus_is_left_alone(
    tmp_path: Path, procs: Processes
) -> None:
    settings = _settings(tmp_path, celery_workers=2)
    _pid_files(settings, _worker(1), _worker(2), _worker(3))
    procs.running |= {_worker(1), _worker(2)}  # worker 3's pid file is stale

    manager._stop_surplus_workers(settings, lambda line: None)

    assert procs.stopped == []


# 3. choices a running stack keeps -----------------------------------------------------


@pytest.fixture
def running_celery_stack(tmp_path: Path, procs: Processes) -> Processes:
    """A celery stack started with CELERY_STACK, its services and workers running."""
    settings = _settings(tmp_path)
    _record(settings, **CELERY_STACK)
    _pid_files(settings, _worker(1), _worker(2), _worker(3))
    procs.running |= {"postgres", "redis", "airflow-scheduler", _worker(1), _worker(2)}
    return procs


@pytest.mark.parametrize(
    ("now", "named"),
    [
        ({"executor": "local"}, "executor celery"),
        ({"backend": "sqlite", "executor": "local"}, "backend postgres"),
        ({"celery_queues": TRAINING_QUEUE}, "celery_queues"),
    ],
    ids=["executor", "backend", "queues"],
)
def test_a_running_stack_refuses_a_changed_executor_backend_or_queues(
    tmp_path: Path, running_celery_stack: Processes, now: dict[str, object], named: str
) -> None:
    with pytest.raises(StackError, match="mlops stack down") as err:
        manager._refuse_changed_choices(_settings(tmp_path, **now))
    assert named in str(err.value)


def test_a_running_stack_takes_a_changed_worker_count(
    tmp_path: Path, running_celery_stack: Processes
) -> None:
    for workers in (1, 5):
        manager._refuse_changed_choices(_settings(tmp_path, celery_workers=workers))


def test_queues_are_not_compared_unless_both_old_and_new_stacks_run_celery(
    tmp_path: Path, procs: Processes
) -> None:
    settings = _settings(tmp_path, executor="local", celery_queues=TRAINING_QUEUE)
    _record(settings, **(CELERY_STACK | {"executor": "local"}))
    procs.running.add("airflow-scheduler")
    manager._refuse_changed_choices(settings)  # a local stack: its queues are no choice


def test_a_worker_alone_counts_as_a_running_stack(tmp_path: Path, procs: Processes) -> None:
    settings = _settings(tmp_path, executor="local")
    _record(settings, **CELERY_STACK)
    _pid_files(settings, _worker(4))
    assert not manager._anything_running(settings)
    procs.running.add(_worker(4))
    assert manager._anything_running(settings)
    with pytest.raises(StackError, match="executor celery"):
        manager._refuse_changed_choices(settings)


def test_a_stopped_stack_refuses_nothing(tmp_path: Path, procs: Processes) -> None:
    settings = _settings(tmp_path)
    _record(settings, **CELERY_STACK)
    _pid_files(settings, _worker(1), _worker(2))  # stale: nothing runs
    for now in (
        {"executor": "local"},
        {"backend": "sqlite", "executor": "local"},
        {"celery_queues": TRAINING_QUEUE},
    ):
        manager._refuse_changed_choices(_settings(tmp_path, **now))


def test_without_a_record_a_running_stack_refuses_nothing(tmp_path: Path, procs: Processes) -> None:
    settings = _settings(tmp_path, executor="local", backend="sqlite")
    procs.running.add("airflow-scheduler")
    manager._refuse_changed_choices(settings)


# 4. up's early checks -----------------------------------------------------------------


class _Reached(Exception):
    """`up` got past its early checks to the services."""


@pytest.fixture
def up_until_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """`up` without credentials, folder permissions, gateway or installs, stopped where
    it builds the list of services."""
    monkeypatch.setattr(manager, "ensure_credentials", lambda settings: [])
    monkeypatch.setattr(manager, "_secure_stack_dir", lambda settings: None)
    monkeypatch.setattr(manager, "_replace_old_gateway", lambda settings, log: None)
    monkeypatch.setattr(redis, "server_binary", lambda **kw: "/usr/bin/redis-server")

    def services(settings: Settings) -> list:
        raise _Reached

    monkeypatch.setattr(manager, "services", services)


def test_up_refuses_a_changed_executor_before_stopping_workers_or_recording_anything(
    tmp_path: Path, running_celery_stack: Processes, up_until_services: None
) -> None:
    settings = _settings(tmp_path, executor="local")
    with pytest.raises(StackError, match="executor celery"):
        manager.up(settings, log=lambda line: None)
    assert running_celery_stack.stopped == []
    assert manager.read_state(settings) == CELERY_STACK


def test_up_with_fewer_workers_stops_the_surplus_and_records_the_new_count(
    tmp_path: Path, running_celery_stack: Processes, up_until_services: None
) -> None:
    settings = _settings(tmp_path, celery_workers=1)
    with pytest.raises(_Reached):
        manager.up(settings, log=lambda line: None)
    assert running_celery_stack.stopped == [_worker(2)]  # worker 3 was not running
    assert _worker(1) in running_celery_stack.running
    assert manager.read_state(settings)["celery_workers"] == 1


def test_a_throwaway_stack_gets_a_distinct_free_port_for_every_service() -> None:
    from mlops_lib.stack.procs import port_in_use

    ports = manager.free_ports()
    settings = load_settings(**ports)
    assert {k: getattr(settings, k) for k in ports} == ports
    taken = [*ports.values(), ports["airflow_port"] + 1, ports["airflow_port"] + 2]
    assert len(set(taken)) == len(taken)  # Airflow's two log servers included
    assert not any(port_in_use("127.0.0.1", p) for p in taken)
