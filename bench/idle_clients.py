#!/usr/bin/env python3
"""sitio's memory with N idle keep-alive clients (each after one request),
behind nginx, at SITIO_MAX_CONNECTIONS=N: what a pod's memory limit must hold.

Usage: bench/idle_clients.py N PATH/TO/sitio   (raise `ulimit -n` above 2N first)
"""
import os, socket, subprocess, sys, time, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from callgrind import free_port, wait_port
n = int(sys.argv[1]); binary = sys.argv[2]
root = tempfile.mkdtemp(); open(f"{root}/a.txt","w").write("x"*100)
# nginx as the service: keep-alive and cheap (python's server would be the bottleneck)
sp = free_port()
conf = f"{root}/n.conf"
open(conf,"w").write(f"daemon off; master_process off; worker_processes 1; error_log /dev/null; pid {root}/n.pid;\nevents {{ worker_connections 8192; }}\nhttp {{ access_log off; keepalive_requests 100000; server {{ listen 127.0.0.1:{sp}; root {root}; }} }}\n")
ng = subprocess.Popen(["nginx","-c",conf,"-p",root], stderr=subprocess.DEVNULL); wait_port(sp)
port, admin = free_port(), free_port()
env = dict(os.environ, PORT=str(port), SITIO_ADMIN_PORT=str(admin), TARGET_PORT=str(sp), SITIO_MAX_CONNECTIONS=str(n), SITIO_ACCESS_LOG="off")
p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); wait_port(port)
def rss(): return int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1])
time.sleep(1); idle = rss()
socks = []
try:
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n",1)[1]) < 100:
            data += s.recv(4096)
        socks.append(s)
    time.sleep(2); full = rss()
    print(f"{n} idle keep-alive clients: RSS {idle/1024:.1f} MiB idle -> {full/1024:.1f} MiB ({(full-idle)/n:.1f} KiB per client)")
finally:
    for s in socks: s.close()
    p.terminate(); ng.terminate(); p.wait(); ng.wait()
