"""The reference servers: nginx (HTTPS, WebDAV PUT) and vsftpd (explicit FTPS).

Each runs as its own process on a free high loopback port with a configuration, a data
directory and a certificate made for this run under a temporary prefix; nothing of the
system's own nginx or vsftpd configuration is used.
"""
import abc
import os
import shutil
import signal
import subprocess
import tempfile

from .measure import BenchError, Target, free_loopback_port, free_port_range, wait_for_port

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
VSFTPD_CANDIDATES = ("/usr/sbin/vsftpd", "/usr/local/sbin/vsftpd")


def _first_existing(paths):
    return next((p for p in paths if os.path.exists(p)), None) or shutil.which(
        os.path.basename(paths[0]))


def _nginx_has_dav(nginx):
    proc = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=30)
    return "http_dav_module" in proc.stderr


def find_reference_binaries():
    """(nginx, vsftpd) paths, None where missing."""
    return _first_existing(NGINX_CANDIDATES), _first_existing(VSFTPD_CANDIDATES)


def ensure_reference_packages(log):
    """Install nginx (with the DAV module) and vsftpd from Debian's packages when missing."""
    nginx, vsftpd = find_reference_binaries()
    wanted = []
    if nginx is None or not _nginx_has_dav(nginx):
        wanted.append("nginx-light")
    if vsftpd is None:
        wanted.append("vsftpd")
    if wanted:
        if os.geteuid() != 0:
            raise BenchError(f"{' and '.join(wanted)} missing and not root to install them")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        # RUNLEVEL=1 keeps invoke-rc.d from starting the packaged services on port 80/21.
        env["RUNLEVEL"] = "1"
        log(f"installing {' '.join(wanted)} with apt-get")
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", *wanted]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise BenchError(f"{' '.join(cmd)} failed: {proc.stderr[-800:]}")
        nginx, vsftpd = find_reference_binaries()
    if nginx is None or not _nginx_has_dav(nginx) or vsftpd is None:
        raise BenchError("nginx with http_dav_module or vsftpd still missing after install")
    return nginx, vsftpd


def make_throwaway_ca(directory):
    """A CA and a server certificate for 127.0.0.1/::1/localhost, EC P-256 like our nodes."""
    os.makedirs(directory, exist_ok=True)
    ca_key, ca_cert = f"{directory}/ca.key", f"{directory}/ca.pem"
    key, csr, cert = f"{directory}/server.key", f"{directory}/server.csr", f"{directory}/server.pem"
    ext = f"{directory}/server.ext"
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n"
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for cmd in (
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_cert, "-days", "2",
         "-subj", "/CN=SecuriFile bench throwaway CA"],
        ["openssl", "req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
         "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(cmd[:3])} failed: {proc.stderr[-500:]}")
    return {"ca_cert": ca_cert, "cert": cert, "key": key}


def _stop_process(proc, sig=signal.SIGTERM, grace_s=15):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


NGINX_CONF = """\
# SecuriFile bench: nginx as the HTTPS ceiling, files stored with WebDAV PUT.
daemon off;
master_process on;
worker_processes auto;
user {user} {group};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/www/.tmp;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    client_max_body_size 0;
    client_body_buffer_size 256k;
    output_buffers 2 256k;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:bench:1m;
        root {prefix}/www;
        location / {{
            dav_methods PUT DELETE MKCOL;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"""


class LocalReference(abc.ABC):
    """A reference server run from ``binary`` under ``prefix``, its files on this disk."""

    def __init__(self, binary, prefix, tls):
        self.binary, self.prefix, self.tls = binary, prefix, tls
        self.proc = None
        self.port = None

    @abc.abstractmethod
    def local_path(self, remote):
        """Where the server keeps ``remote`` on this disk: each reference (nginx, vsftpd)
        says where its document root is."""

    def delete(self, remote):
        try:
            os.remove(self.local_path(remote))
        except FileNotFoundError:
            pass


class NginxReference(LocalReference):
    """nginx 'the ceiling': HTTPS with WebDAV PUT for uploads and static GET for downloads."""

    name = "nginx"

    def start(self):
        for sub in ("www/.tmp", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            os.makedirs(f"{self.prefix}/{sub}", exist_ok=True)
        user, group = ("nobody", "nogroup") if os.geteuid() == 0 else (None, None)
        if user:
            for root, dirs, _files in os.walk(f"{self.prefix}/www"):
                shutil.chown(root, user, group)
            _open_path_for(self.prefix)
        self.port = free_loopback_port()
        conf = f"{self.prefix}/nginx.conf"
        text = NGINX_CONF.format(prefix=self.prefix, port=self.port, user=user or "nobody",
                                 group=group or "nogroup", **self.tls)
        if not user:
            text = text.replace("user nobody nogroup;\n", "")
        with open(conf, "w") as f:
            f.write(text)
        log = open(f"{self.prefix}/stderr.log", "wb")
        self.proc = subprocess.Popen([self.binary, "-p", self.prefix, "-c", conf],
                                     stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, 20, self.proc)
        return self.target()

    def target(self):
        return Target(name=self.name, base_url=f"https://127.0.0.1:{self.port}/bench",
                      curl_options=["--cacert", self.tls["ca_cert"]], root_pids=[self.proc.pid])

    def local_path(self, remote):
        return f"{self.prefix}/www/bench/{remote}"

    def stop(self):
        _stop_process(self.proc, signal.SIGQUIT)  # graceful shutdown


VSFTPD_CONF = """\
# SecuriFile bench: vsftpd with explicit FTPS (AUTH TLS), anonymous writes into /upload.
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
run_as_launching_user=NO
anonymous_enable=YES
local_enable=NO
no_anon_password=YES
anon_root={prefix}/root
ftp_username=ftp
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_umask=022
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port={pasv_min}
pasv_max_port={pasv_max}
connect_from_port_20=NO
secure_chroot_dir={prefix}/empty
xferlog_enable=NO
dirmessage_enable=NO
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
max_clients=20
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=YES
force_anon_data_ssl=YES
ssl_sslv2=NO
ssl_sslv3=NO
require_ssl_reuse=NO
ssl_ciphers=HIGH
rsa_cert_file={cert}
rsa_private_key_file={key}
vsftpd_log_file={prefix}/vsftpd.log
"""


def _open_path_for(path):
    """Let an unprivileged worker traverse the 0700 temporary directories down to ``path``."""
    top = os.path.realpath(tempfile.gettempdir())
    path = os.path.realpath(path)
    while path.startswith(top + os.sep):
        os.chmod(path, os.stat(path).st_mode | 0o711)
        path = os.path.dirname(path)


class VsftpdReference(LocalReference):
    """vsftpd with explicit FTPS, the kind of service the customer runs today."""

    name = "vsftpd"

    def start(self):
        if os.geteuid() != 0:
            raise BenchError("vsftpd's anonymous FTPS set-up needs root")
        # vsftpd refuses a chroot root writable by the ftp user: root stays root's, upload/ is ftp's
        os.makedirs(f"{self.prefix}/root/upload", exist_ok=True)
        os.makedirs(f"{self.prefix}/empty", exist_ok=True)
        os.chmod(f"{self.prefix}/root", 0o755)
        os.chmod(f"{self.prefix}/empty", 0o755)
        shutil.chown(f"{self.prefix}/root/upload", "ftp", "ftp")
        _open_path_for(self.prefix)
        self.port = free_loopback_port()
        pasv_min, pasv_max = free_port_range(2000)
        conf = f"{self.prefix}/vsftpd.conf"
        with open(conf, "w") as f:
            f.write(VSFTPD_CONF.format(prefix=self.prefix, port=self.port, pasv_min=pasv_min,
                                       pasv_max=pasv_max, **self.tls))
        os.chmod(conf, 0o600)  # vsftpd insists the config is owned by the user who runs it
        log = open(f"{self.prefix}/stderr.log", "wb")
        # vsftpd reports start-up errors ("500 OOPS") on file descriptor 0
        self.proc = subprocess.Popen([self.binary, conf], stdin=log, stdout=log,
                                     stderr=subprocess.STDOUT)
        wait_for_port(self.port, 20, self.proc)
        return self.target()

    def target(self):
        return Target(name=self.name,
                      base_url=f"ftp://anonymous:bench@127.0.0.1:{self.port}/upload",
                      curl_options=["--ssl-reqd", "--cacert", self.tls["ca_cert"],
                                    "--ftp-create-dirs"],
                      root_pids=[self.proc.pid], http=False)

    def local_path(self, remote):
        return f"{self.prefix}/root/upload/{remote}"

    def stop(self):
        _stop_process(self.proc)


def versions(nginx, vsftpd):
    out = {}
    if nginx:
        proc = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=30)
        out["nginx"] = proc.stderr.strip().rpartition("/")[2]
    if vsftpd:
        # vsftpd -v prints its version on file descriptor 0
        proc = subprocess.run(["sh", "-c", '"$0" -v 0>&1', vsftpd], capture_output=True,
                              text=True, timeout=30)
        text = (proc.stdout + proc.stderr).strip()
        out["vsftpd"] = text.split()[-1] if text else "?"
    return out

