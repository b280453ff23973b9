#!/usr/bin/env python3
"""Runs the mmgate binary as each shipped deployment would run it, without a
container engine or systemd: the Dockerfile's final stage (its COPY'd files,
ENV, USER, ENTRYPOINT and HEALTHCHECK), docker-compose.yml (its volume,
secret, environment, user and healthcheck), the Kubernetes manifest (its
ConfigMap, Secret volume, env, securityContext and probes) and the systemd
unit (its install steps, User, ExecStartPre, ExecStart with NOTIFY_SOCKET,
ExecReload). Files go where the deployment puts them and mmgate runs as the
uid it sets; the probes are asked.

Needs root: it re-runs itself in private mount and network namespaces, so the
files it places (/etc/mmgate, /run/secrets, /usr/local/bin/mmgate) and the
ports it uses (8080, 9090) are seen by nothing else. The systemd check
creates the `mmgate` system user, as the unit's install steps do.
Usage: .ci/deploy-check.py [path/to/mmgate]   (default target/debug/mmgate)
"""
import base64
import hashlib
import http.client
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "mm-deploy-check-key-0123456789"
ROTATED = "mm-deploy-check-key-ROTATED"


def fingerprint(key):
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def fail(message):
    sys.exit(f"deploy-check: FAILED: {message}")


# ---------------------------------------------------------------- plumbing


class Upstream(http.server.BaseHTTPRequestHandler):
    """A stand-in for MachineMetrics: records the Authorization it gets."""
    seen = []

    def do_GET(self):
        Upstream.seen.append(self.headers.get("Authorization"))
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def request(port, path, headers=None, source=None):
    """GET http://127.0.0.1:port/path (from `source`, if given): (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def wait_until(what, check, seconds=10):
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as e:
            last = e
        time.sleep(0.05)
    fail(f"{what} (last: {last})")


def as_user(uid, gid, groups=()):
    """setpriv arguments running a command as uid:gid with `groups`."""
    args = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
    args.append(f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups")
    return args


class Running:
    """mmgate started as a deployment starts it; output kept for messages."""

    def __init__(self, argv, env, user):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(user + argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def ready(self, admin_port):
        def check():
            if self.proc.poll() is not None:
                fail(f"mmgate exited with {self.proc.returncode}:\n{self.output()}")
            return request(admin_port, "/readyz")[0] == 200
        wait_until("mmgate never became ready", check)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail("mmgate did not stop on SIGTERM")
        if code != 0:
            fail(f"mmgate exited with {code} on SIGTERM:\n{self.output()}")
        for secret in (KEY, ROTATED):
            if secret in self.output():
                fail("a key appeared in mmgate's output")


def place(path, text=None, source=None, owner=(0, 0), mode=0o644):
    """Writes a file where a deployment would put it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if source:
        shutil.copyfile(source, path)
    else:
        with open(path, "w") as f:
            f.write(text)
    os.chown(path, *owner)
    os.chmod(path, mode)


def readyz(admin_port):
    status, body = request(admin_port, "/readyz")
    return status, json.loads(body)


def probe(argv, env, user):
    return subprocess.run(user + argv, env=env, capture_output=True, text=True, timeout=30)


# ---------------------------------------------------------------- container


def dockerfile_final_stage():
    lines, stage = [], None
    text = open(os.path.join(ROOT, "Dockerfile")).read().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stage = []
            lines = stage
        elif stage is not None:
            lines.append((word.upper(), rest.strip()))
    image = {"copy": [], "env": {}, "user": None, "entrypoint": [], "cmd": [], "healthcheck": None}
    for word, rest in lines:
        if word == "COPY":
            parts = rest.split()
            image["copy"].append(([p for p in parts if not p.startswith("--")][0], parts[-1], rest.startswith("--from")))
        elif word == "ENV":
            key, _, value = rest.partition("=")
            image["env"][key] = value
        elif word == "USER":
            image["user"] = rest
        elif word == "ENTRYPOINT":
            image["entrypoint"] = json.loads(rest)
        elif word == "CMD":
            image["cmd"] = json.loads(rest)
        elif word == "HEALTHCHECK":
            image["healthcheck"] = json.loads(rest[rest.index("CMD") + 3:].strip())
    return image


def install_image(image, binary):
    """What `docker build` puts in the image's final stage."""
    for source, dest, from_build in image["copy"]:
        if from_build:
            place(dest, source=binary, mode=0o755)
        else:
            place(dest, source=os.path.join(ROOT, source))


def check_container(binary, upstream_port):
    image = dockerfile_final_stage()
    install_image(image, binary)
    uid, gid = map(int, image["user"].split(":"))
    user = as_user(uid, gid)
    argv = image["entrypoint"] + image["cmd"]
    base = dict(image["env"], PATH="/usr/bin:/bin")
    # `docker run --rm -e MM_API_KEY ...` without the variable: one line, exit 2.
    missing = subprocess.run(user + argv, env=base, capture_output=True, text=True, timeout=20)
    if missing.returncode != 2 or "MM_API_KEY" not in missing.stderr:
        fail(f"container without MM_API_KEY: exit {missing.returncode}: {missing.stderr}")
    # `docker run --rm -e MM_API_KEY -p 127.0.0.1:8080:8080 mmgate`; the
    # upstream URL override only because this machine has no internet.
    env = dict(base, MM_API_KEY=KEY, MMGATE_UPSTREAM__URL=f"http://127.0.0.1:{upstream_port}")
    running = Running(argv, env, user)
    running.ready(9090)
    health = probe(image["healthcheck"], env, user)
    if health.returncode != 0:
        fail(f"HEALTHCHECK {image['healthcheck']} exited {health.returncode}: {health.stderr}")
    # A published port's connections come from Docker's bridge gateway:
    # anonymous there, a token needed from any other network.
    status, body = request(8080, "/reports/production", source="172.17.0.1")
    if status != 200 or Upstream.seen[-1] != f"Bearer {KEY}":
        fail(f"container: request from the bridge got {status} {body}")
    status, body = request(8080, "/reports/production", source="10.9.9.9")
    if status != 401:
        fail(f"container: an anonymous request from another network got {status} {body}")
    running.stop()
    print("deploy-check: container image (Dockerfile) ok")


# ---------------------------------------------------------------- compose


def check_compose(binary, upstream_port):
    import yaml
    compose_dir = os.path.join(ROOT, "deploy/compose")
    compose = yaml.safe_load(open(os.path.join(compose_dir, "docker-compose.yml")))
    service = compose["services"]["mmgate"]
    image = dockerfile_final_stage()
    install_image(image, binary)
    for volume in service["volumes"]:
        source, dest = volume.split(":")[:2]
        place(dest, source=os.path.join(compose_dir, source), mode=0o644)
    # The secret, created exactly as the compose file's header says.
    work = tempfile.mkdtemp()
    header = [l[len("#   "):] for l in open(os.path.join(compose_dir, "docker-compose.yml"))
              if l.startswith("#   ") and "install" in l]
    script = "\n".join(l.replace("sudo ", "") for l in header)
    subprocess.run(["bash", "-euc", script], cwd=work, check=True, env=dict(os.environ, MM_API_KEY=KEY))
    uid, gid = map(int, str(service["user"]).split(":"))
    user = as_user(uid, gid)
    env = dict(image["env"], **{k: str(v) for k, v in service["environment"].items()}, PATH="/usr/bin:/bin")
    env["MMGATE_UPSTREAM__URL"] = f"http://127.0.0.1:{upstream_port}"
    argv = image["entrypoint"] + image["cmd"]
    for name in service["secrets"]:
        source = os.path.join(work, compose["secrets"][name]["file"])
        dest = f"/run/secrets/{name}"
        # Outside Swarm, compose bind-mounts the file with its host owner and mode.
        st = os.stat(source)
        place(dest, source=source, owner=(st.st_uid, st.st_gid), mode=st.st_mode & 0o777)
    running = Running(argv, env, user)
    running.ready(9090)
    health = probe(service["healthcheck"]["test"][1:], env, user)
    if health.returncode != 0:
        fail(f"compose healthcheck exited {health.returncode}: {health.stderr}")
    status, body = readyz(9090)
    if body["keys"][0]["fingerprint"] != fingerprint(KEY):
        fail(f"compose: wrong key loaded: {body}")
    status, _ = request(8080, "/reports/production")
    if status != 401:
        fail(f"compose: a request without a token got {status}")
    running.stop()
    # The mistake the README used to lead to: a root-owned 0600 secret.
    place("/run/secrets/mm_reporting_key", text=KEY, owner=(0, 0), mode=0o600)
    refused = subprocess.run(user + argv, env=env, capture_output=True, text=True, timeout=20)
    if refused.returncode != 2 or f"mmgate runs as uid {uid}" not in refused.stderr:
        fail(f"compose: an unreadable secret: exit {refused.returncode}: {refused.stderr}")
    print("deploy-check: docker compose ok (and an unreadable secret is explained)")


# ---------------------------------------------------------------- kubernetes


def check_kubernetes(binary, upstream_port):
    import yaml
    docs = list(yaml.safe_load_all(open(os.path.join(ROOT, "deploy/kubernetes/sidecar.yaml"))))
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    if pod.get("enableServiceLinks") is not False:
        fail("kubernetes: set enableServiceLinks: false")
    container = next(c for c in pod["initContainers"] if c["name"] == "mmgate")
    image = dockerfile_final_stage()
    install_image(image, binary)
    volumes = {v["name"]: v for v in pod["volumes"]}
    security = pod["securityContext"]
    uid, gid, fs_group = security["runAsUser"], security["runAsGroup"], security["fsGroup"]
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            for name, text in configmap["data"].items():
                place(os.path.join(mount["mountPath"], name), text=text, owner=(0, fs_group))
        elif "secret" in volume:
            # The kubelet's atomic writer: files behind a ..data symlink.
            mode = volume["secret"]["defaultMode"]
            directory = mount["mountPath"]
            os.makedirs(directory, exist_ok=True)
            version = os.path.join(directory, "..2026_01_01_1")
            place(os.path.join(version, "reporting"), text=KEY, owner=(0, fs_group), mode=mode)
            os.symlink("..2026_01_01_1", os.path.join(directory, "..data"))
            os.symlink("..data/reporting", os.path.join(directory, "reporting"))
    env = dict(image["env"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    # What a Service named mmgate would add, were service links on.
    env.update(MMGATE_PORT="tcp://10.96.0.12:8080", MMGATE_SERVICE_HOST="10.96.0.12",
               MMGATE_PORT_8080_TCP_ADDR="10.96.0.12", PATH="/usr/bin:/bin",
               MMGATE_UPSTREAM__URL=f"http://127.0.0.1:{upstream_port}")
    user = as_user(uid, gid, [fs_group])
    argv = image["entrypoint"] + container.get("args", [])
    running = Running(argv, env, user)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    running.ready(ports["admin"])
    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[name]["httpGet"]
        port = ports.get(get["port"], get["port"])
        status, body = request(port, get["path"])
        if status != 200:
            fail(f"kubernetes {name} {get['path']} answered {status}: {body}")
    # The app container calls mmgate on the pod's loopback, without a token.
    status, body = request(8080, "/graphql?query=%7Bmachines%7Bname%7D%7D")
    if status != 200 or Upstream.seen[-1] != f"Bearer {KEY}":
        fail(f"kubernetes: the app's request got {status} {body}")
    # `kubectl apply` of a new Secret: the kubelet swaps ..data.
    directory = next(m["mountPath"] for m in container["volumeMounts"] if "secret" in volumes[m["name"]])
    version = os.path.join(directory, "..2026_01_01_2")
    place(os.path.join(version, "reporting"), text=ROTATED, owner=(0, fs_group), mode=0o440)
    os.symlink("..2026_01_01_2", os.path.join(directory, "..data_tmp"))
    os.rename(os.path.join(directory, "..data_tmp"), os.path.join(directory, "..data"))
    wait_until("kubernetes: the rotated Secret was not picked up",
               lambda: readyz(9090)[1]["keys"][0]["fingerprint"] == fingerprint(ROTATED))
    running.stop()
    print("deploy-check: kubernetes sidecar ok (probes, service-link variables ignored, Secret rotation)")


# ---------------------------------------------------------------- systemd


def unit_file():
    text = open(os.path.join(ROOT, "deploy/systemd/mmgate.service")).read()
    steps, service, section = [], {}, None
    for line in text.splitlines():
        if line.startswith("#   "):
            steps.append(line[4:])
        elif line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            service.setdefault(key, []).append(value)
    return steps, service


def check_systemd(binary, upstream_port):
    steps, service = unit_file()
    # The unit's install steps, run as written from the repository, except
    # building (done) and systemctl (no systemd here: emulated below).
    script = []
    for step in steps:
        if step.startswith("cargo build") or step.startswith("systemctl"):
            continue
        script.append(step.replace("target/release/mmgate", binary))
    subprocess.run(["bash", "-euc", "\n".join(script)], cwd=ROOT, check=True, env=dict(os.environ, MM_API_KEY=KEY))
    user = ["setpriv", "--reuid=" + service["User"][0], "--regid=" + service["Group"][0], "--init-groups"]
    env = {"PATH": "/usr/bin:/bin"}
    for assignment in service.get("Environment", []):
        key, _, value = assignment.partition("=")
        env[key] = value
    pre = probe(shlex.split(service["ExecStartPre"][0]), env, user)
    if pre.returncode != 0:
        fail(f"systemd ExecStartPre failed: {pre.stdout}{pre.stderr}")
    # systemd's notify socket, as Type=notify gives one.
    notify_path = os.path.join(tempfile.mkdtemp(), "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    os.chmod(notify_path, 0o777)
    os.chmod(os.path.dirname(notify_path), 0o755)
    notify.settimeout(10)
    env["NOTIFY_SOCKET"] = notify_path
    env["MMGATE_UPSTREAM__URL"] = f"http://127.0.0.1:{upstream_port}"
    running = Running(shlex.split(service["ExecStart"][0]), env, user)

    def expect(state):
        deadline = time.time() + 10
        while time.time() < deadline:
            message = notify.recv(4096).decode()
            if state in message.splitlines():
                return
        fail(f"systemd: no {state} notification")
    expect("READY=1")
    running.ready(9090)
    status, body = request(8080, "/reports/production")
    if status != 200 or Upstream.seen[-1] != f"Bearer {KEY}":
        fail(f"systemd: a local request got {status} {body}")
    # ExecReload: kill -HUP $MAINPID.
    reload = service["ExecReload"][0].replace("$MAINPID", str(running.proc.pid))
    subprocess.run(shlex.split(reload), check=True)
    expect("RELOADING=1")
    expect("READY=1")
    # Rotate as the unit's header says: replace the key file.
    subprocess.run(["bash", "-euc", "printf %s \"$K\" | install -m 0640 -g mmgate /dev/stdin /etc/mmgate/keys/reporting"],
                   check=True, env=dict(os.environ, K=ROTATED))
    wait_until("systemd: the rotated key file was not picked up",
               lambda: readyz(9090)[1]["keys"][0]["fingerprint"] == fingerprint(ROTATED))
    running.proc.send_signal(signal.SIGTERM)
    expect("STOPPING=1")
    running.stop()
    print("deploy-check: systemd unit ok (install steps, ExecStartPre, READY/RELOADING/STOPPING, rotation)")


# ---------------------------------------------------------------- README


def readme_block(after):
    """The lines of the first ```sh block after the heading `after`."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index(after):]
    block = section[section.index("```sh\n") + 6:]
    return [l for l in block[:block.index("```")].splitlines() if l.strip()]


def check_readme_matches_the_deployments():
    """README's copy-paste steps are the ones this script runs."""
    steps, _ = unit_file()
    if readme_block("### Under systemd") != steps:
        fail("README's systemd steps differ from deploy/systemd/mmgate.service's header")
    compose = [l[len("#   "):] for l in open(os.path.join(ROOT, "deploy/compose/docker-compose.yml"))
               if l.startswith("#   ")]
    if readme_block("### With docker compose") != ["cd deploy/compose"] + [l.rstrip("\n") for l in compose]:
        fail("README's compose steps differ from deploy/compose/docker-compose.yml's header")
    print("deploy-check: README's deployment steps are the ones checked")


# ---------------------------------------------------------------- main


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/mmgate"))
    if os.environ.get("MMGATE_DEPLOY_CHECK_INSIDE") != "1":
        if os.geteuid() != 0:
            fail("run as root (it uses mount and network namespaces)")
        os.makedirs("/run/secrets", exist_ok=True)
        command = ["unshare", "--mount", "--net", "--propagation", "private", sys.executable, __file__, binary]
        sys.exit(subprocess.run(command, env=dict(os.environ, MMGATE_DEPLOY_CHECK_INSIDE="1")).returncode)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    # Sources of "other networks": Docker's bridge gateway and a LAN address.
    for address in ("172.17.0.1/32", "10.9.9.9/32"):
        subprocess.run(["ip", "addr", "add", address, "dev", "lo"], check=True)
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = upstream.server_address[1]
    check_readme_matches_the_deployments()
    checks = [check_container, check_compose, check_kubernetes, check_systemd]
    for check in checks:
        # A clean slate of deployment directories for each.
        for directory in ("/etc/mmgate", "/run/secrets", "/usr/local/bin", "/usr/local/share/doc",
                          "/etc/sysusers.d", "/etc/systemd/system"):
            os.makedirs(directory, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", directory], check=True)
        check(binary, port)
        for directory in ("/etc/systemd/system", "/etc/sysusers.d", "/usr/local/share/doc", "/usr/local/bin",
                          "/run/secrets", "/etc/mmgate"):
            subprocess.run(["umount", directory], check=True)
    print("deploy-check: every deployment path ok")


if __name__ == "__main__":
    main()
