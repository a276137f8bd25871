"""Checks that deploy/'s files agree with each other, where no schema can tell (run by .ci/run).

- every service that compose.yaml's depends_on names exists, and so does every upstream server
  that nginx.conf names (as a compose service);
- every variable compose.yaml takes from the environment is in .env.example;
- every file kustomization.yaml lists exists, and the Deployment's Secret is the example's name
  with the keys the fleet needs.
Prints the compose services' names (for the stand-in hosts of `nginx -t`). Exits 1 on a mismatch.
"""

import pathlib
import re
import sys

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
SECRET_KEYS = {"WITTY_BFF_API_KEY", "WITTY_BFF_JWT_SECRET", "WITTY_BFF_WEBHOOK_SECRET", "WITTY_BFF_REDIS_URL"}
errors = []

compose_text = (DEPLOY / "compose.yaml").read_text()
services = yaml.safe_load(compose_text)["services"]
for name, service in services.items():
    for dep in service.get("depends_on") or []:
        if dep not in services:
            errors.append(f"compose.yaml: {name} depends on {dep}, which is no service")

for server in re.findall(r"^\s*server\s+([A-Za-z0-9.-]+):\d+", (DEPLOY / "nginx.conf").read_text(), re.M):
    if server not in services:
        errors.append(f"nginx.conf: upstream server {server} is no service of compose.yaml")

env_example = set(re.findall(r"^([A-Z0-9_]+)=", (DEPLOY / ".env.example").read_text(), re.M))
for var in sorted(set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", compose_text)) - env_example):
    errors.append(f"compose.yaml takes ${{{var}}}, which .env.example does not set")

k8s = DEPLOY / "k8s"
for resource in yaml.safe_load((k8s / "kustomization.yaml").read_text())["resources"]:
    if not (k8s / resource).is_file():
        errors.append(f"k8s/kustomization.yaml lists {resource}, which does not exist")
secret = yaml.safe_load((k8s / "secret.example.yaml").read_text())
deployment = yaml.safe_load((k8s / "deployment.yaml").read_text())
refs = [
    src["secretRef"]["name"]
    for c in deployment["spec"]["template"]["spec"]["containers"]
    for src in c.get("envFrom", [])
    if "secretRef" in src
]
if refs != [secret["metadata"]["name"]]:
    errors.append(f"k8s/deployment.yaml takes its secrets from {refs}, not from the example Secret")
missing = SECRET_KEYS - set(secret.get("stringData", {}))
if missing:
    errors.append(f"k8s/secret.example.yaml lacks {sorted(missing)}")

for e in errors:
    print(e, file=sys.stderr)
if errors:
    sys.exit(1)
print(" ".join(services))
