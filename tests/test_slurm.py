"""The SLURM profiles on a real single-node SLURM cluster.

A tiny K sweep (2 K x 2 folds, 8 synthetic images per class) runs through `--profile profiles/slurm`
exactly as docs/cluster.md says, and its metrics are compared with a local
`--cores 2` run of the same config. The cluster is started here: Debian's slurm-wlm and munge, config in /etc/slurm (job steps do
not see SLURM_CONF), accounting off, one node declaring a GPU backed by /dev/null so GPU-requesting
jobs are accepted on a machine without one. Needs root; where root or the binaries are missing the
tests are skipped with the reason, except under CI (CI=true), where that is a failure: .ci/run
installs the packages so the cluster path is always tested there.
"""
import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import SHARED_WEIGHTS

REPO = Path(__file__).resolve().parents[1]
PROFILE = "profiles/slurm"
CPU_PROFILE = "profiles/slurm-cpu"
WEIGHTS = str(SHARED_WEIGHTS) if SHARED_WEIGHTS.exists() else "random"

# What docs/cluster.md promises every job fits on its first attempt: an ordinary compute node.
NODE_CPUS, NODE_MEM_MB = 8, 32000

# docs/cluster.md's command for a site without accounting, then what only the test adds: keep the
# SLURM log of every job (the plugin deletes those of successful jobs), so that they can be counted, and
# poll sooner. The plugin polls that many seconds after a job finished, and 10 s later each time none
# has; this sweep's jobs take about 10 s, so polls 1, 12, 33 s after a finish save about a minute over the
# profile's 10, 30, 60.
CLUSTER_ARGS = ["--profile", PROFILE, "--slurm-status-command", "squeue"]
TEST_ONLY_ARGS = ["--slurm-keep-successful-logs", "--slurm-init-seconds-before-status-checks", "1"]

SWEEP = {  # 3 classes x 8 images at 64 px, K in {4, 8}, 2 folds, XGBoost: 34 cluster jobs and `all`
    "data": {"layout": "niosh"},  # dir and labels_csv: the dataset written by the fixture
    "schemes": ["tiny"],
    "custom_schemes": {"tiny": {"Cl": "Cl", "Fi": "Fi", "Ma": "Ma", "MS": None, "NC": None, "GS": None,
                                "SP": None, "HDP": None, "PR": None, "O": None}},
    "cv": {"folds": 2, "seed": 1},
    "balance": {"strategies": ["rotate"]},
    "weights": WEIGHTS,
    "hypercolumns": {"image_size": 64, "batch_size": 8, "shards": 1},
    "dictionary": {"sample_size": 2000, "niter": 5},
    "k": 8, "k_values": [4, 8], "classifiers": ["xgboost"],
    "xgboost": {"n_estimators": 20},
    "model": {"scheme": "tiny"},
    "report": {"tsne_perplexity": 5},
}

SLURM_CONF, GRES_CONF = Path("/etc/slurm/slurm.conf"), Path("/etc/slurm/gres.conf")
MARKER = "# Written by tests/test_slurm.py for its throwaway single-node cluster; removed when it ends."
SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel")


def rule_bodies() -> dict[str, str]:
    """Each rule's (and checkpoint's) indented body, read from the workflow's rules/*.smk; a rule made by
    `use rule X as Y with:` (e.g. train_classifier_tta) has X's body, then what it changes."""
    bodies, derived = {}, []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        for name, body in re.findall(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t][^\n]*\n|\n)*)", text, re.M):
            bodies[name] = body
        derived += re.findall(r"^\s*use rule (\w+) as (\w+) with:\n((?:[ \t][^\n]*\n|\n)*?)"
                              r"(?=^\s*(?:use |ruleorder)|\Z)", text, re.M)
    for parent, name, changes in derived:
        bodies[name] = bodies[parent] + changes
    return bodies


def gpu_rules() -> set[str]:
    """Rules whose `resources:` declare a GPU."""
    return {name for name, body in rule_bodies().items() if re.search(r"^\s+gpu\s*=", body, re.M)}


def load_profile(name: str) -> dict:
    return yaml.safe_load((REPO / name / "config.yaml").read_text())


def first_attempt_mem_mb(expression) -> int:
    """A profile's mem_mb (a number or an expression of `attempt`) on a job's first attempt."""
    return int(eval(str(expression), {"attempt": 1}))


def accuracy_rows(path: Path) -> list[dict]:
    return [r for r in csv.DictReader(open(path), delimiter="\t") if r["metric"] not in ("fit_seconds", "predict_seconds")]


# ----------------------------------------------------------------------------------- profiles
def test_profiles_name_no_site_and_differ_only_in_gpus():
    """Runs without a cluster: nothing site-specific, GPUs only through `gpu`, the CPU profile in step."""
    gpu_profile, cpu_profile = load_profile(PROFILE), load_profile(CPU_PROFILE)
    text = (REPO / PROFILE / "config.yaml").read_text()
    assert not re.search(r"^\s*(slurm_partition|slurm_account|slurm_extra|gres|gpu_model)\s*:", text, re.M)
    assert max(gpu_profile["set-threads"].values()) <= NODE_CPUS
    for resources in [gpu_profile["default-resources"], *gpu_profile["set-resources"].values()]:
        assert first_attempt_mem_mb(resources["mem_mb"]) <= NODE_MEM_MB
    # Every threaded rule gets its threads from the profile (a cluster run has no --cores).
    threaded = {name for name, body in rule_bodies().items() if re.search(r"^\s+threads:", body, re.M)}
    assert threaded <= set(gpu_profile["set-threads"])
    # The CPU profile is the GPU profile with `gpu: 0` for exactly the rules that declare a GPU.
    declared = gpu_rules()
    assert {"extract_hypercolumns", "train_classifier"} <= declared
    zeroed = {rule for rule, res in cpu_profile["set-resources"].items() if res.pop("gpu", None) == 0}
    assert zeroed == declared
    assert cpu_profile == gpu_profile


# ------------------------------------------------------------------------------- the cluster
def _which(binary: str) -> str | None:
    return shutil.which(binary, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prerequisites_missing() -> str | None:
    if os.geteuid() != 0:
        return "not root: munged, slurmctld and slurmd must be started as root"
    missing = [b for b in SLURM_BINARIES if _which(b) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian: apt-get install slurm-wlm munge, as .ci/run does)"
    for conf in (SLURM_CONF, GRES_CONF):
        if conf.exists() and MARKER not in conf.read_text():
            return f"{conf} exists and is not this test's: this machine has its own SLURM, left untouched"
    return None


class SingleNodeSlurm:
    """munged, slurmctld and `slurmd -N localhost`, started by this process and stopped by pid."""

    def __init__(self, state: Path):
        self.state = state
        self.daemons: list[subprocess.Popen] = []

    def _spawn(self, name: str, cmd: list[str], **kwargs) -> subprocess.Popen:
        with open(self.state / f"{name}.out", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kwargs)
        self.daemons.append(proc)
        return proc

    def _fail(self, what: str):
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.state.glob("*.out")))
        pytest.fail(f"{what}\n{logs}")

    def start(self):
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode != 0:
            self._start_munged()
        hostname = socket.gethostname().split(".")[0]
        # The node declares 32 CPUs on a 2-core machine (config_overrides) so that jobs run side by
        # side; that every job asks for no more than an ordinary node has is asserted per job instead.
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(f"""{MARKER}
ClusterName=cntemtest
SlurmctldHost={hostname}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={self.state}/ctld
SlurmdSpoolDir={self.state}/spool
SlurmctldPidFile={self.state}/slurmctld.pid
SlurmdPidFile={self.state}/slurmd.pid
SlurmctldLogFile={self.state}/slurmctld.log
SlurmdLogFile={self.state}/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol for the whole test.
MinJobAge=3600
GresTypes=gpu
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=32 RealMemory=128000 Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
        GRES_CONF.write_text(f"{MARKER}\nNodeName=localhost Name=gpu File=/dev/null\n")
        for sub in ("ctld", "spool"):
            (self.state / sub).mkdir()
        self._spawn("slurmctld", [_which("slurmctld"), "-D"])
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", "localhost"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.daemons):
                self._fail("a SLURM daemon exited while starting")
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                return
            time.sleep(1)
        self._fail("the node did not become idle within 60 s")

    def _start_munged(self):
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run([_which("mungekey") or "mungekey", "--create", "--keyfile", str(key)], check=True)
            shutil.chown(key, "munge", "munge")
        for folder in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.chown(folder, "munge", "munge")
        self._spawn("munged", [_which("munged"), "--foreground"], user="munge", group="munge", extra_groups=[])
        for _ in range(50):
            if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
                return
            time.sleep(0.2)
        self._fail("munged did not start")

    def stop(self):
        # Every job on this private controller is the test's own; cancel any left by a failure.
        queued = subprocess.run(["squeue", "-h", "-t", "PENDING,RUNNING", "-o", "%i"], capture_output=True, text=True)
        if queued.stdout.split():
            subprocess.run(["scancel", *queued.stdout.split()], capture_output=True)
        for proc in reversed(self.daemons):  # slurmd, slurmctld, then munged
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conf in (SLURM_CONF, GRES_CONF):
            if conf.exists() and MARKER in conf.read_text():
                conf.unlink()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = _prerequisites_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the SLURM test, but {reason}")
        pytest.skip(reason)
    cluster = SingleNodeSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Snakemake from the repository root, as the README runs it, on `workdir`'s config."""
    cmd = [sys.executable, "-m", "snakemake", "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), *args]
    try:
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        # A job that can never start (too many CPUs or too much memory for the node) pends silently.
        queue = subprocess.run(["squeue", "-o", "%i %j %T %r %C %m %b"], capture_output=True, text=True).stdout
        pytest.fail(f"snakemake {' '.join(args)} did not finish in {timeout} s; queue:\n{queue}\n"
                    f"{(exc.stdout or b'')[-4000:]!r}")


def succeeded(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-8000:]
    return result.stdout + result.stderr


def submissions(log: str) -> dict[str, str]:
    """SLURM job id -> SLURM log file of every job the plugin submitted, from snakemake's log."""
    return dict(re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.?$", log, re.M))


def slurm_jobs(run_id: str) -> dict[str, dict]:
    """SLURM's own record (`scontrol show job`) of the jobs of one snakemake run, by job id."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\S+?)=(\S*)", line))
        if fields.get("JobName") == run_id:
            fields["rule"] = re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", fields["Comment"]).group(1)
            jobs[fields["JobId"]] = fields
    return jobs


@pytest.fixture(scope="module")
def sweep(slurm, tmp_path_factory):
    """The K sweep through SLURM and locally on one synthetic dataset; then train_model via slurm-cpu."""
    from cntem.synthetic import generate_dataset

    data = tmp_path_factory.mktemp("data")
    labels = generate_dataset(data / "images", {"Cl": 8, "Fi": 8, "Ma": 8}, labels_csv=data / "labels.csv",
                              seed=3, size_range=(64, 64))
    config = {**SWEEP, "data": {**SWEEP["data"], "dir": str(data / "images"), "labels_csv": str(labels)}}
    runs = {name: tmp_path_factory.mktemp(name) for name in ("local", "cluster")}
    for workdir in runs.values():
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    # The local reference stops at the metrics (its figures and model would only cost time) and runs
    # beside the cluster run, which mostly waits for its status polls; at the lowest priority, so as not
    # to slow cluster jobs past a poll (the plugin polls 10 s later each time nothing has finished).
    local_log = runs["local"] / "snakemake.log"
    with open(local_log, "w") as out:
        local = subprocess.Popen(["nice", "-n", "19", sys.executable, "-m", "snakemake", "results/metrics.tsv",
                                  "--directory", str(runs["local"]), "--cores", "2",
                                  "--configfile", str(runs["local"] / "config.yaml")],
                                 cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        cluster_log = succeeded(snakemake(runs["cluster"], *CLUSTER_ARGS, *TEST_ONLY_ARGS))
        print(f"\nK sweep through SLURM: {time.monotonic() - started:.0f} s")
        kept_logs = {p.stem: p for p in (runs["cluster"] / ".snakemake" / "slurm_logs").rglob("*.log")}
        # profiles/slurm-cpu on a GPU rule: train_model again, one job.
        cpu_log = succeeded(snakemake(runs["cluster"], "--profile", CPU_PROFILE, "--slurm-status-command", "squeue",
                                      *TEST_ONLY_ARGS, "--forcerun", "train_model"))
        local.wait(timeout=600)
    finally:
        if local.poll() is None:  # something failed first: leave no run behind
            local.kill()
            local.wait()
    assert local.returncode == 0, local_log.read_text()[-6000:]
    return {"dirs": runs, "log": cluster_log, "run_id": run_id_of(cluster_log), "kept_logs": kept_logs,
            "cpu_log": cpu_log}


def run_id_of(log: str) -> str:
    """The plugin's id of one snakemake run: the SLURM job name of all its jobs."""
    return re.search(r"SLURM run ID: (\S+)", log).group(1)


def test_every_job_but_all_ran_as_a_slurm_job(sweep):
    log = sweep["log"]
    executed = re.findall(r"^(localrule|rule|checkpoint|localcheckpoint) (\w+):$", log, re.M)
    local = [name for kind, name in executed if kind.startswith("local")]
    assert local == ["all"]
    submitted = submissions(log)
    assert len(submitted) == len(executed) - 1
    # Every (K, fold) of the sweep is a job of its own.
    assert [name for _, name in executed].count("fit_dictionary") == 4
    assert [name for _, name in executed].count("train_classifier") == 4
    assert re.search(rf"^{len(executed)} of {len(executed)} steps \(100%\) done$", log, re.M)
    # Each submission left its SLURM log (stdout of the batch job), and SLURM ran every one of them.
    kept = sweep["kept_logs"]
    assert set(kept) == set(submitted)
    assert all(Path(path) == kept[job] for job, path in submitted.items())
    jobs = slurm_jobs(sweep["run_id"])
    assert set(jobs) == set(submitted)
    assert {(j["JobState"], j["ExitCode"]) for j in jobs.values()} == {("COMPLETED", "0:0")}
    assert sorted(j["rule"] for j in jobs.values()) == sorted(name for kind, name in executed if name != "all")


def test_jobs_fit_an_ordinary_node_with_profile_threads_and_gpus(sweep):
    from snakemake.utils import available_cpu_count

    profile, declared = load_profile(PROFILE), gpu_rules()
    for job_id, job in slurm_jobs(sweep["run_id"]).items():
        rule = job["rule"]
        assert int(job["NumCPUs"]) == profile["set-threads"].get(rule, 1), rule
        # Inside the job Snakemake runs it with the profile's threads, capped at the cores it sees (the
        # test node's CPUs are not all real); the rule's own count from --cores would be half of those.
        expected = min(profile["set-threads"].get(rule, 1), available_cpu_count())
        printed = set(re.findall(r"^\s+threads: (\d+)$", sweep["kept_logs"][job_id].read_text(), re.M))
        assert printed == ({str(expected)} if expected > 1 else set()), rule
        mem = profile["set-resources"].get(rule, {}).get("mem_mb", profile["default-resources"]["mem_mb"])
        assert job["MinMemoryNode"] == f"{first_attempt_mem_mb(mem)}M", rule
        assert int(job["NumCPUs"]) <= NODE_CPUS and first_attempt_mem_mb(mem) <= NODE_MEM_MB, rule
        # The sweep's only classifier is XGBoost, so every job of a GPU rule asks for one GPU.
        assert job.get("TresPerJob", "") == ("gres:gpu:1" if rule in declared else ""), rule


def test_cluster_metrics_equal_the_local_run(sweep):
    cluster, local = (sweep["dirs"][name] / "results" for name in ("cluster", "local"))
    assert accuracy_rows(cluster / "metrics.tsv") == accuracy_rows(local / "metrics.tsv")
    assert len(accuracy_rows(cluster / "metrics.tsv")) > 0
    assert (cluster / "leakage_check.txt").read_text().startswith("no leakage in")


def test_a_rerun_submits_nothing(sweep):
    log = succeeded(snakemake(sweep["dirs"]["cluster"], *CLUSTER_ARGS, *TEST_ONLY_ARGS))
    assert "Nothing to be done" in log and not submissions(log)


def test_cpu_profile_requests_no_gpu(sweep):
    """The fixture reran train_model, a GPU rule, through profiles/slurm-cpu (and the model's uncertainty after it)."""
    log = sweep["cpu_log"]
    jobs = slurm_jobs(run_id_of(log))
    assert sorted(j["rule"] for j in jobs.values()) == ["fit_uncertainty", "train_model"]
    assert set(jobs) == set(submissions(log))
    assert all("TresPerJob" not in j and (j["JobState"], j["ExitCode"]) == ("COMPLETED", "0:0") for j in jobs.values())
    job = next(j for j in jobs.values() if j["rule"] == "train_model")
    assert int(job["NumCPUs"]) == load_profile(CPU_PROFILE)["set-threads"]["train_model"]
