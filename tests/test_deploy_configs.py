"""The deploy/ configurations load with the real libraries and agree with each other.

Each instance file (``deploy/docker/dagster.yaml``, ``deploy/k8s/dagster.yaml``) is validated as written
against Dagster's instance schema, then loaded into a real ``DagsterInstance`` from a temporary
``DAGSTER_HOME``; only what needs a live service is swapped for the load (Postgres -> SQLite, in-cluster
Kubernetes config -> a kubeconfig file pointing nowhere). dagster-k8s builds the run pod's Job from the
loaded launcher. The vLLM run config is validated against the real asset job's config schema.
Not covered: building the images, a Docker engine, a cluster, Postgres, a GPU.
"""

import json
import re
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.dagster_run import DagsterRun
from dagster_docker import DockerRunLauncher
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY, construct_dagster_k8s_job, get_user_defined_k8s_config

from assets.definitions import build_definitions
from resources import SamplerResource
from restem_pipeline.experiments import Experiment

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
IMAGE = "restem-code:local"
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def _yaml(rel: str) -> dict:
    return yaml.safe_load((DEPLOY / rel).read_text())


def _home(tmp_path: Path, name: str, config: dict) -> Path:
    home = tmp_path / name
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def _loadable(tmp_path: Path, config: dict) -> dict:
    """The same instance config with Postgres storage swapped for SQLite (no server in tests)."""
    assert "postgres" in config["storage"]
    return {**config, "storage": {"sqlite": {"base_dir": str(tmp_path / "storage")}}}


@pytest.fixture
def pg_env(monkeypatch):
    for name in ("DAGSTER_POSTGRES_USER", "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_DB", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(name, "restem")


def _gpus(k8s_config: dict) -> str:
    return k8s_config["container_config"]["resources"]["limits"]["nvidia.com/gpu"]


# --- Docker -----------------------------------------------------------------------------------------


def test_docker_instance_loads_a_docker_run_launcher(tmp_path, pg_env):
    raw = _yaml("docker/dagster.yaml")
    validated, _ = dagster_instance_config(str(_home(tmp_path, "as_written", raw)))
    assert validated["storage"]["postgres"]["postgres_db"]["hostname"] == "restem_postgres"

    with dg.DagsterInstance.from_config(str(_home(tmp_path, "home", _loadable(tmp_path, raw)))) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, DockerRunLauncher)
        assert launcher.image == IMAGE and launcher.networks == ["restem_network"]
        assert {"RESTEM_DATA_ROOT", "DAGSTER_POSTGRES_PASSWORD"} <= set(launcher.env_vars)
        assert "restem_data:/data" in launcher.container_kwargs["volumes"]
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.compute_log_manager._base_dir == "/opt/dagster/logs"


def test_a_misspelt_docker_launcher_setting_fails_the_load(tmp_path, pg_env):
    raw = _loadable(tmp_path, _yaml("docker/dagster.yaml"))
    raw["run_launcher"]["config"]["netwrok"] = raw["run_launcher"]["config"].pop("network")
    with (
        dg.DagsterInstance.from_config(str(_home(tmp_path, "home", raw))) as instance,
        pytest.raises(dg.DagsterInvalidConfigError, match="netwrok"),
    ):
        _ = instance.run_launcher


def _env_of(service: dict) -> dict:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def test_compose_agrees_with_the_docker_instance_and_the_image():
    compose = _yaml("docker/docker-compose.yaml")
    launcher = _yaml("docker/dagster.yaml")["run_launcher"]["config"]
    pg = _yaml("docker/dagster.yaml")["storage"]["postgres"]["postgres_db"]
    services = compose["services"]
    assert set(services) == {"restem_postgres", "restem_code", "restem_webserver", "restem_daemon"}
    dagster_services = ("restem_code", "restem_webserver", "restem_daemon")

    # one image for code location, webserver, daemon and runs; the code location says it is the run image
    assert {services[s]["image"] for s in dagster_services} == {launcher["image"]}
    assert _env_of(services["restem_code"])["DAGSTER_CURRENT_IMAGE"] == launcher["image"]
    build = services["restem_code"]["build"]
    assert (DEPLOY / "docker" / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "docker" / "Dockerfile"

    # the network the launcher joins is the compose network, under that exact name
    assert compose["networks"]["restem_network"]["name"] == launcher["network"]
    assert all(launcher["network"] in services[s]["networks"] for s in services)

    # every variable the launcher copies into runs is set where runs are launched (daemon, webserver)
    for s in ("restem_daemon", "restem_webserver", "restem_code"):
        assert set(launcher["env_vars"]) <= set(_env_of(services[s])), s

    # run containers mount the same named volumes, at the paths the code location and the instance use
    mounts = dict(v.split(":", 1) for v in launcher["container_kwargs"]["volumes"])
    for volume in mounts:
        assert compose["volumes"][volume]["name"] == volume  # no compose project prefix
    code_mounts = dict(v.split(":", 1) for v in services["restem_code"]["volumes"])
    assert code_mounts["restem_data"] == mounts["restem_data"] == _env_of(services["restem_code"])["RESTEM_DATA_ROOT"]
    instance_logs = _yaml("docker/dagster.yaml")["compute_logs"]["config"]["base_dir"]
    assert mounts["restem_logs"] == instance_logs
    assert f"restem_logs:{instance_logs}" in services["restem_webserver"]["volumes"]

    # Postgres: the instance's host is the service; user and database agree
    assert pg["hostname"] in services
    pg_env = _env_of(services[pg["hostname"]])
    daemon_env = _env_of(services["restem_daemon"])
    assert daemon_env[pg["username"]["env"]] == pg_env["POSTGRES_USER"]
    assert daemon_env[pg["db_name"]["env"]] == pg_env["POSTGRES_DB"]
    assert daemon_env[pg["password"]["env"]] == pg_env["POSTGRES_PASSWORD"]


def test_workspace_and_dockerfile_serve_the_code_location_compose_names():
    compose = _yaml("docker/docker-compose.yaml")
    (entry,) = _yaml("docker/workspace.yaml")["load_from"]
    server = entry["grpc_server"]
    code = compose["services"][server["host"]]
    command = code["command"]
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("-p") + 1] == str(server["port"])
    assert command[command.index("-m") + 1] == "assets.definitions"
    for s in ("restem_webserver", "restem_daemon"):
        cmd = compose["services"][s]["command"]
        assert cmd[cmd.index("-w") + 1] == "/opt/dagster/dagster_home/workspace.yaml"

    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert base.endswith(":local") and "/" not in base  # a local image: no registry host, no namespace
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    assert "COPY deploy/docker/dagster.yaml deploy/docker/workspace.yaml ${DAGSTER_HOME}/" in dockerfile
    assert '".[deploy]"' in dockerfile
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert cmd == command


# --- Kubernetes -------------------------------------------------------------------------------------


def _k8s_loadable(tmp_path: Path, raw: dict) -> dict:
    """In-cluster config exists only inside a pod: load with a kubeconfig file that points nowhere."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    config = _loadable(tmp_path, raw)
    launcher = {**config["run_launcher"]["config"], "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    return {**config, "run_launcher": {**config["run_launcher"], "config": launcher}}


@pytest.fixture
def k8s_instance(tmp_path, pg_env):
    raw = _yaml("k8s/dagster.yaml")
    dagster_instance_config(str(_home(tmp_path, "as_written", raw)))
    with dg.DagsterInstance.from_config(str(_home(tmp_path, "home", _k8s_loadable(tmp_path, raw)))) as instance:
        yield instance


def _run_pod(launcher: K8sRunLauncher, tags: dict | None = None):
    """The Job dagster-k8s would create for a run, built by its own code (no API call)."""
    run = DagsterRun(job_name="__ASSET_JOB", run_id="0" * 8 + "-0000-0000-0000-" + "0" * 12, tags=tags or {})
    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="restem-run",
        user_defined_k8s_config=context.run_k8s_config,
    )
    return context, job.spec.template.spec


def test_k8s_instance_loads_a_k8s_run_launcher_that_gives_runs_gpus_and_the_data_root(k8s_instance):
    launcher = k8s_instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.job_namespace == "restem" and launcher.image_pull_policy == "IfNotPresent"
    context, pod = _run_pod(launcher)
    assert context.namespace == "restem"
    (container,) = pod.containers
    assert container.image == IMAGE
    assert container.resources.limits["nvidia.com/gpu"] == "4"
    assert {m.mount_path for m in container.volume_mounts} >= {"/data"}
    assert {"name": "RESTEM_DATA_ROOT", "value": "/data"} in [{"name": e.name, "value": e.value} for e in container.env]
    assert any(t.key == "nvidia.com/gpu" for t in pod.tolerations)


def test_a_run_tag_resizes_one_run_pod(k8s_instance):
    tag = {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}
    _, pod = _run_pod(k8s_instance.run_launcher, {USER_DEFINED_K8S_CONFIG_KEY: json.dumps(tag)})
    assert pod.containers[0].resources.limits["nvidia.com/gpu"] == "1"


def test_gpu_op_tag_profiles_become_step_pod_gpus(k8s_instance):
    profiles = _yaml("k8s/gpu_op_tags.yaml")
    assert set(profiles) == {"sampling", "training"}
    launcher = k8s_instance.run_launcher
    tensor_parallel = _yaml("vllm/run_config.yaml")["resources"]["sampler"]["config"]["tensor_parallel_size"]
    wanted = {"sampling": str(tensor_parallel), "training": "1"}  # the trainer is one process on one device
    run = DagsterRun(job_name="__ASSET_JOB", run_id="1" * 8 + "-0000-0000-0000-" + "0" * 12)
    job_config = launcher.get_container_context_for_run(run).get_k8s_job_config(job_image=IMAGE, run_launcher=launcher)
    for name, tags in profiles.items():
        parsed = get_user_defined_k8s_config({k: json.dumps(v) for k, v in tags.items()})  # as Dagster serializes
        job = construct_dagster_k8s_job(
            job_config=job_config,
            args=["dagster", "api", "execute_step"],
            job_name=f"restem-{name}",
            user_defined_k8s_config=parsed,
        )
        assert job.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"] == wanted[name], name


def test_a_malformed_op_tag_is_rejected_by_dagster_k8s():
    bad = {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}, "pod_spec": {}}
    with pytest.raises(dg.DagsterInvalidConfigError):
        get_user_defined_k8s_config({USER_DEFINED_K8S_CONFIG_KEY: json.dumps(bad)})


def _snake(key: str) -> str:
    """Helm's camelCase key as the instance's snake_case key (runK8sConfig -> run_k8s_config)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def test_helm_values_render_the_same_launcher_as_k8s_dagster_yaml():
    values = _yaml("k8s/values.yaml")
    launcher = _yaml("k8s/dagster.yaml")["run_launcher"]
    assert values["runLauncher"]["type"] == launcher["class"] == "K8sRunLauncher"
    v = values["runLauncher"]["config"]["k8sRunLauncher"]
    c = launcher["config"]
    assert v["imagePullPolicy"] == c["image_pull_policy"]
    assert v["jobNamespace"] == c["job_namespace"]
    assert v["loadInclusterConfig"] is c["load_incluster_config"] is True
    assert v["envVars"] == c["env_vars"]
    assert v["volumes"] == c["volumes"] and v["volumeMounts"] == c["volume_mounts"]
    assert {_snake(k): x for k, x in v["runK8sConfig"].items()} == c["run_k8s_config"]
    assert _gpus(c["run_k8s_config"]) == "4"

    (deployment,) = values["dagster-user-deployments"]["deployments"]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    assert image == IMAGE
    for part in ("dagsterWebserver", "dagsterDaemon"):
        assert f"{values[part]['image']['repository']}:{values[part]['image']['tag']}" == IMAGE
    assert deployment["codeServerArgs"] == ["-m", "assets.definitions"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert [f"{k}={x}" for k, x in env.items()] == c["env_vars"]  # code location and runs agree
    assert deployment["volumes"] == c["volumes"] and deployment["volumeMounts"] == c["volume_mounts"]
    claim = c["volumes"][0]["persistentVolumeClaim"]["claimName"]
    pvc = _yaml("k8s/pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["metadata"]["name"] == claim
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]


# --- vLLM and multi-GPU training ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def asset_job():
    return build_definitions([Experiment("restem", iterations=2)]).resolve_implicit_global_asset_job_def()


def test_vllm_run_config_validates_against_the_real_job(asset_job):
    run_config = _yaml("vllm/run_config.yaml")
    resolved = dg.validate_run_config(asset_job, run_config)["resources"]
    sampler = resolved["sampler"]["config"]
    assert sampler["backend"] == "vllm" and sampler["tensor_parallel_size"] == 4
    assert resolved["trainer"]["config"]["device"] == "cuda"
    built = SamplerResource(**run_config["resources"]["sampler"]["config"])  # the pydantic checks too
    assert built.backend == "vllm" and built.tensor_parallel_size == 4
    assert int(_gpus(_yaml("k8s/dagster.yaml")["run_launcher"]["config"]["run_k8s_config"])) >= 4


@pytest.mark.parametrize(
    "sampler_config, error",
    [({"backend": "vllm-server"}, "vllm-server"), ({"tensor_parallel": 4}, "tensor_parallel")],
)
def test_a_wrong_sampler_config_is_rejected(asset_job, sampler_config, error):
    with pytest.raises(dg.DagsterInvalidConfigError, match=error):
        dg.validate_run_config(asset_job, {"resources": {"sampler": {"config": sampler_config}}})


def test_sampler_rejects_a_zero_tensor_parallel_size():
    with pytest.raises(ValueError, match="tensor_parallel_size must be >= 1, got 0"):
        SamplerResource(backend="vllm", tensor_parallel_size=0)


def test_accelerate_config_matches_the_documented_torchrun_command():
    config = _yaml("accelerate/multi_gpu.yaml")
    assert config["distributed_type"] == "MULTI_GPU" and config["num_machines"] == 1
    assert config["num_processes"] >= 2 and config["mixed_precision"] in {"no", "fp16", "bf16"}
    readme = (DEPLOY / "README.md").read_text()
    (nproc,) = set(re.findall(r"torchrun .*--nproc_per_node=(\d+)", readme))
    assert int(nproc) == config["num_processes"]
    assert "accelerate launch --config_file deploy/accelerate/multi_gpu.yaml" in readme
