"""A small synchronous QMP client (QEMU Machine Protocol over a unix socket).

QMP sends one JSON object per line: a greeting, then for every command a
{"return": ...} or {"error": ...}, with asynchronous {"event": ...}
objects in between. Events are kept in arrival order so a caller can wait
for one (DEVICE_DELETED) after the command that causes it returned."""

import json
import socket
import time


class QmpError(Exception):
    pass


class Qmp:
    def __init__(self, path, connect_timeout=30.0):
        self.path = path
        self.sock = None
        self.buf = b""
        self.events = []
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                self.sock = s
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise QmpError("cannot connect to QMP socket " + path)
                time.sleep(0.05)
        greeting = self._read(connect_timeout)
        if "QMP" not in greeting:
            raise QmpError("not a QMP greeting: %r" % (greeting,))
        self.version = greeting["QMP"].get("version", {}).get("qemu", {})
        self.command("qmp_capabilities")

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def _read(self, timeout):
        """The next JSON object from the socket."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError("QMP: no answer within %.0f s" % timeout)
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise QmpError("QMP: connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.strip()
        if not line:
            return self._read(max(0.001, deadline - time.monotonic()))
        try:
            return json.loads(line)
        except ValueError as e:
            raise QmpError("QMP: bad JSON %r: %s" % (line, e))

    def command(self, name, timeout=60.0, **arguments):
        """Run one command; returns its "return" value, raises on "error"."""
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            obj = self._read(timeout)
            if "event" in obj:
                self.events.append(obj)
                continue
            if "error" in obj:
                err = obj["error"]
                raise QmpError("%s: %s: %s" % (name, err.get("class"), err.get("desc")))
            if "return" in obj:
                return obj["return"]

    def wait_event(self, name, timeout, match=None):
        """Wait for (and consume) an event NAME whose data matches every
        key of MATCH; events that arrived earlier count too."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("event") == name and _matches(ev.get("data", {}), match or {}):
                    del self.events[i]
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                obj = self._read(left)
            except QmpError:
                if time.monotonic() >= deadline:
                    return None
                raise
            if "event" in obj:
                self.events.append(obj)


def _matches(data, match):
    return all(data.get(k) == v for k, v in match.items())


def hotpluggable_slots(cpus):
    """Split query-hotpluggable-cpus into (plugged, free) lists of
    (type, props) with props ready for device_add."""
    plugged, free = [], []
    for entry in cpus:
        props = {k: v for k, v in entry.get("props", {}).items() if k.endswith("-id")}
        item = (entry.get("type"), props)
        (plugged if entry.get("qom-path") else free).append(item)
    # Lowest ids first: QEMU lists the highest first.
    key = lambda item: tuple(sorted(item[1].items()))
    return sorted(plugged, key=key), sorted(free, key=key)
