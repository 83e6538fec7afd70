"""A training script that checks the SageMaker training contract it was started with, then exits.

It checks every SM_* variable and config file that aws/sagemaker-training-toolkit documents (ENVIRONMENT_VARIABLES.md,
environment.py), computing the right value itself from SAGEMAKER_BASE_DIR and what the test sent, which the test
passes in the request's Environment as CONTRACT_EXPECTED (JSON: job_name, instance_type, hyperparameters as sent,
channels {name: [file names]}, content_types {name: type}, submit_dir).

It prints one line for each problem, writes them to output/failure and exits 2; with none, it writes model/model.txt
and output/data/report.txt (so the test sees both archives) and exits 0.
"""

import json
import os
import sys

SAGEMAKER_HPS = {"sagemaker_program", "sagemaker_submit_directory", "sagemaker_enable_cloudwatch_metrics",
                 "sagemaker_region", "sagemaker_container_log_level", "sagemaker_job_name",
                 "default_user_module_name", "_tuning_objective_metric", "sagemaker_s3_output"}

problems = []


def check(what, actual, expected):
    if actual != expected:
        problems.append(f"{what}: got {actual!r}, expected {expected!r}")


def decode(value):
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        return value


def env_json(name):
    try:
        return json.loads(os.environ[name])
    except KeyError:
        problems.append(f"{name} is not set")
    except ValueError:
        problems.append(f"{name} is not JSON: {os.environ[name]!r}")
    return None


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: {exc}")
        return None


expected = json.loads(os.environ["CONTRACT_EXPECTED"])
base = os.environ.get("SAGEMAKER_BASE_DIR", "")
if not os.path.isabs(base) or not os.path.isdir(base):
    print(f"SAGEMAKER_BASE_DIR is not a directory: {base!r}")
    sys.exit(2)

join = os.path.join
input_dir, output_dir, model_dir = join(base, "input"), join(base, "output"), join(base, "model")
config_dir = join(input_dir, "config")
channels = sorted(expected["channels"])
raw_hps = expected["hyperparameters"]
user_hps = {k: decode(v) for k, v in raw_hps.items() if k not in SAGEMAKER_HPS and not k.startswith("sagemaker_")}
program = decode(raw_hps["sagemaker_program"])

# --- the config files ---
check("hyperparameters.json", read_json(join(config_dir, "hyperparameters.json")), raw_hps)
resource_config = read_json(join(config_dir, "resourceconfig.json"))
group = {"instance_group_name": "homogeneousCluster", "instance_type": expected["instance_type"], "hosts": ["algo-1"]}
check("resourceconfig.json", resource_config, {
    "current_host": "algo-1", "current_instance_type": expected["instance_type"],
    "current_group_name": "homogeneousCluster", "hosts": ["algo-1"], "instance_groups": [group],
    "network_interface_name": "eth0",
})
input_data_config = read_json(join(config_dir, "inputdataconfig.json"))
expected_idc = {}
for name in channels:
    entry = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    if name in expected.get("content_types", {}):
        entry["ContentType"] = expected["content_types"][name]
    expected_idc[name] = entry
check("inputdataconfig.json", input_data_config, expected_idc)

# --- the directories and the data ---
for name in channels:
    channel_dir = join(input_dir, "data", name)
    check(f"SM_CHANNEL_{name.upper()}", os.environ.get(f"SM_CHANNEL_{name.upper()}"), channel_dir)
    found = sorted(os.path.relpath(join(d, f), channel_dir) for d, _, fs in os.walk(channel_dir) for f in fs)
    check(f"files of channel {name}", found, sorted(expected["channels"][name]))
for path in (model_dir, join(output_dir, "data"), join(base, "code")):
    if not os.path.isdir(path):
        problems.append(f"{path} is not a directory")
check("working directory", os.getcwd(), join(base, "code"))

# --- the SM_* variables ---
user_args = []
for name in sorted(user_hps):
    user_args += [f"--{name}" if len(name) > 1 else f"-{name}", str(user_hps[name])]
check("sys.argv[1:]", sys.argv[1:], user_args)
simple = {
    "SM_MODEL_DIR": model_dir,
    "SM_INPUT_DIR": input_dir,
    "SM_INPUT_CONFIG_DIR": config_dir,
    "SM_OUTPUT_DIR": output_dir,
    "SM_OUTPUT_DATA_DIR": join(output_dir, "data"),
    "SM_OUTPUT_INTERMEDIATE_DIR": join(output_dir, "intermediate"),
    "SM_CURRENT_HOST": "algo-1",
    "SM_CURRENT_INSTANCE_TYPE": expected["instance_type"],
    "SM_CURRENT_INSTANCE_GROUP": "homogeneousCluster",
    "SM_NUM_CPUS": str(os.cpu_count()),
    "SM_NUM_GPUS": "0",
    "SM_LOG_LEVEL": "20",
    "SM_NETWORK_INTERFACE_NAME": "eth0",
    "SM_MODULE_NAME": program[:-3],
    "SM_USER_ENTRY_POINT": program,
    "SM_MODULE_DIR": expected["submit_dir"],
    "SM_FRAMEWORK_MODULE": "",
    "SM_IS_HETERO": "false",
    "TRAINING_JOB_NAME": expected["job_name"],
    "SAGEMAKER_BASE_DIR": base,
}
for name, value in simple.items():
    check(name, os.environ.get(name), value)
json_vars = {
    "SM_CHANNELS": channels,
    "SM_HOSTS": ["algo-1"],
    "SM_HPS": user_hps,
    "SM_USER_ARGS": user_args,
    "SM_RESOURCE_CONFIG": resource_config,
    "SM_INPUT_DATA_CONFIG": input_data_config,
    "SM_FRAMEWORK_PARAMS": {},
    "SM_CURRENT_INSTANCE_GROUP_HOSTS": ["algo-1"],
    "SM_INSTANCE_GROUPS": ["homogeneousCluster"],
    "SM_INSTANCE_GROUPS_DICT": {"homogeneousCluster": group},
    "SM_DISTRIBUTION_INSTANCE_GROUPS": [],
}
for name, value in json_vars.items():
    check(name, env_json(name), value)
for name, value in user_hps.items():
    shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    check(f"SM_HP_{name.upper()}", os.environ.get(f"SM_HP_{name.upper()}"), shown)
leaked = sorted(k for k in os.environ if k.startswith("SM_HP_SAGEMAKER"))
check("sagemaker_* hyperparameters passed as SM_HP_*", leaked, [])

training_env = env_json("SM_TRAINING_ENV") or {}
for key, value in {
    "channel_input_dirs": {name: join(input_dir, "data", name) for name in channels},
    "current_host": "algo-1",
    "hosts": ["algo-1"],
    "hyperparameters": user_hps,
    "input_config_dir": config_dir,
    "input_data_config": input_data_config,
    "input_dir": input_dir,
    "job_name": expected["job_name"],
    "log_level": 20,
    "model_dir": model_dir,
    "module_dir": expected["submit_dir"],
    "module_name": program[:-3],
    "network_interface_name": "eth0",
    "num_cpus": os.cpu_count(),
    "num_gpus": 0,
    "output_data_dir": join(output_dir, "data"),
    "output_dir": output_dir,
    "output_intermediate_dir": join(output_dir, "intermediate"),
    "resource_config": resource_config,
    "user_entry_point": program,
    "is_master": True,
    "master_hostname": "algo-1",
    "current_instance_type": expected["instance_type"],
}.items():
    check(f"SM_TRAINING_ENV[{key!r}]", training_env.get(key), value)

if problems:
    for problem in problems:
        print("contract:", problem)
    with open(join(output_dir, "failure"), "w") as f:
        f.write(f"contract: {len(problems)} problem(s): " + "; ".join(problems))
    sys.exit(2)

with open(join(model_dir, "model.txt"), "w") as f:
    f.write("a model\n")
with open(join(output_dir, "data", "report.txt"), "w") as f:
    f.write("contract checked\n")
print("contract: all checks passed")
