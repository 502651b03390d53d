"""Which layer should the lake use to reach S3-compatible object storage? Measured (issue #19, item 1).

``pip install -e ".[s3]"`` (s3fs, moto[server]), then::

    python -m bench.s3_access [--users N] [--repeat K] [--out /tmp/s3bench]

DuckDB's ``httpfs`` extension cannot be downloaded at run time here, so DuckDB cannot speak S3 by
itself; the candidates are layers in Python that DuckDB reads and writes through:

* ``pyarrow``: ``pyarrow.fs.S3FileSystem``; DuckDB scans a ``pyarrow.dataset`` registered as a view
  and writes by streaming its result as Arrow batches into ``pyarrow.parquet.ParquetWriter`` on S3
  (``write_arrow``), or by ``COPY`` to a local file uploaded afterwards (``write_copy``).
  ``pyarrow_delayed`` is the same with ``allow_delayed_open=True`` (one PutObject for a small file).
* ``s3fs``: an ``s3fs.S3FileSystem`` registered in DuckDB (``register_filesystem``), then
  ``read_parquet('s3://...')`` and ``COPY ... TO 's3://...'`` in plain SQL.
* ``local``: the same on local disk, the reference.

An S3 server is started on 127.0.0.1 (moto's, in a subprocess, in memory). One generated month
(``pipeline.generate``) is turned into the lake's snapshot files (Parquet, zstd, sorted by user_id, as
``pipeline.duck.PARQUET_OPTIONS``). Every (layer, repeat) runs in a fresh worker process, which times
each operation (wall, the process's CPU over all its threads, the peak RSS during the operation by
resetting ``VmHWM`` through ``/proc/self/clear_refs``) and the S3 server's CPU over it. Medians of K
repeats are printed, every sample goes to ``<out>/results.json``. A probe records which layer can
make a conditional put (``If-None-Match: *``), what a rename-free commit needs.

moto is a slow S3 (Python, one process): the numbers compare the layers, they are not S3's speed.
The server gets dummy credentials; no credential is printed or written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BUCKET = "lake"
AS_OF = "2024-01-31"
QUERY_TABLE = "subscriptions"
NUMERIC_COLUMN = "monthly_fee"
# pyarrow_delayed: S3FileSystem(allow_delayed_open=True), which sends a file smaller than a part as one
# PutObject instead of a multipart upload (create, part, complete)
LAYERS = ("pyarrow", "pyarrow_delayed", "s3fs", "local")
REGION = "us-east-1"
# moto takes any key; these never leave the machine and are never printed
DUMMY_KEY = "s3bench-dummy-key"
DUMMY_SECRET = "s3bench-dummy-secret"
PARQUET_OPTIONS = "FORMAT parquet, COMPRESSION zstd"  # as pipeline.duck.PARQUET_OPTIONS


# --- data ---------------------------------------------------------------------------------------------


def prepare(out: Path, users: int) -> dict:
    """One generated month as the lake's snapshot files: ``<out>/parquet-<N>/<table>.parquet``."""
    import duckdb

    drops = out / f"drops-{users}"
    month = drops / "month_000"
    if not month.is_dir():
        subprocess.run(
            [sys.executable, "-m", "pipeline.generate", "--out", str(drops), "--users", str(users), "--months", "1"],
            check=True,
        )
    pq_dir = out / f"parquet-{users}"
    pq_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    files = {}
    for csv in sorted(month.glob("*.csv")):
        target = pq_dir / f"{csv.stem}.parquet"
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            con.execute(f"COPY (SELECT * FROM read_csv_auto('{csv}') ORDER BY user_id) TO '{tmp}' ({PARQUET_OPTIONS})")
            tmp.rename(target)
        files[csv.stem] = target.stat().st_size
    query_file = pq_dir / f"{QUERY_TABLE}.parquet"
    (groups,) = con.execute(f"SELECT count(DISTINCT row_group_id) FROM parquet_metadata('{query_file}')").fetchone()
    (n_rows,) = con.execute(f"SELECT count(*) FROM '{query_file}'").fetchone()
    (point_id,) = con.execute(
        f"SELECT user_id FROM '{query_file}' ORDER BY user_id LIMIT 1 OFFSET {n_rows * 2 // 3}"
    ).fetchone()
    con.close()
    return {
        "dir": str(pq_dir),
        "files": files,
        "query_table_rows": n_rows,
        "query_table_row_groups": groups,
        "point_id": point_id,
    }


# --- the S3 server ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int) -> None:
    """moto's S3 server (as ``moto_server``), with one answer put right.

    moto 5.2 answers CompleteMultipartUpload with a ``<CompleteMultipartUploadResponse>`` root; S3's is
    ``<CompleteMultipartUploadResult>``. The AWS C++ SDK in pyarrow reads the former as "an error
    embedded in a 200 OK", retries three times and fails every multipart upload (pyarrow's writes above
    5 MB, and every ``open_output_stream`` without ``allow_delayed_open``). botocore (s3fs, boto3) does
    not mind. Only that one answer is rewritten; every other request passes through untouched.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)

    def fixed(environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST" or "uploadId=" not in environ.get("QUERY_STRING", ""):
            return app(environ, start_response)
        got: dict = {}

        def capture(status, headers, exc_info=None):
            got["status"], got["headers"] = status, headers
            return lambda data: None

        body = b"".join(app(environ, capture))
        body = body.replace(b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult")
        headers = [(k, v) for k, v in got["headers"] if k.lower() != "content-length"]
        start_response(got["status"], [*headers, ("Content-Length", str(len(body)))])
        return [body]

    run_simple("127.0.0.1", port, fixed, threaded=True)


def start_moto(port: int, log: Path) -> subprocess.Popen:
    """moto's server in a process of its own; its request log (werkzeug's, no headers) goes to ``log``."""
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.s3_access", "--serve", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=f,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start")


def boto_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_SECRET,
        region_name=REGION,
    )


# --- a worker: one layer, one repeat, in a fresh process ---------------------------------------------


def _rss_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Timer:
    def __init__(self, server_pid: int | None, server_log: Path | None):
        import psutil

        self.server = psutil.Process(server_pid) if server_pid else None
        self.log = server_log if server_pid else None
        self.samples: dict[str, dict] = {}

    def _log_pos(self) -> int:
        return self.log.stat().st_size if self.log else 0

    def _requests(self, start: int) -> dict[str, int] | None:
        """The S3 requests the server logged since ``start``: per method, and 206 = ranged GETs."""
        if not self.log:
            return None
        time.sleep(0.1)  # the server logs a request after answering it
        counts: dict[str, int] = {}
        with open(self.log, "rb") as f:
            f.seek(start)
            for line in f.read().decode(errors="replace").splitlines():
                m = re.search(r'"([A-Z]+) \S+ HTTP/[\d.]+" (\d{3})', line)
                if m:
                    counts[m.group(1)] = counts.get(m.group(1), 0) + 1
                    if m.group(2) == "206":
                        counts["GET 206"] = counts.get("GET 206", 0) + 1
        return counts

    def run(self, name: str, fn):
        log0 = self._log_pos()
        reset = _rss_reset()
        rss0 = _status_kib("VmRSS")
        srv0 = sum(self.server.cpu_times()[:2]) if self.server else 0.0
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        srv = (sum(self.server.cpu_times()[:2]) - srv0) if self.server else 0.0
        self.samples[name] = {
            "wall_s": round(wall, 4),
            "cpu_s": round(cpu, 4),
            "server_cpu_s": round(srv, 4),
            "peak_rss_mib": round(_status_kib("VmHWM") / 1024, 1) if reset else None,
            "rss_before_mib": round(rss0 / 1024, 1),
            "result": result,
            "requests": self._requests(log0),
        }
        return result


def worker(layer: str, data_dir: Path, endpoint: str, server_pid: int, point_id: str, scratch: Path) -> dict:
    server_log = scratch / "moto.log"
    import duckdb
    import pyarrow.parquet as pq

    tables = sorted(p.stem for p in data_dir.glob("*.parquet"))
    timer = Timer(server_pid if layer != "local" else None, server_log)
    prefix = f"{layer}/snapshots"
    key = f"{QUERY_TABLE}/as_of={AS_OF}/data.parquet"

    def connect():
        con = duckdb.connect()
        # never try to fetch an extension (httpfs would be autoloaded for s3:// otherwise)
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET threads = 2")
        return con

    queries = {
        "scan": f"SELECT count(*), sum({NUMERIC_COLUMN}) FROM t",
        "projection": f"SELECT user_id, {NUMERIC_COLUMN} FROM t",
        "point": f"SELECT * FROM t WHERE user_id = '{point_id}'",
    }
    write_src = f"SELECT * FROM read_parquet('{data_dir / QUERY_TABLE}.parquet')"

    def run_queries(bind):
        for name, sql in queries.items():

            def q(name=name, sql=sql):
                con = connect()
                bind(con)
                if name == "projection":
                    return con.execute(sql).to_arrow_table().num_rows
                row = con.execute(sql).fetchall()
                return len(row) if name == "point" else [float(v) for v in row[0]]

            timer.run(name, q)

    if layer == "local":
        lake = scratch / "local-lake" / prefix
        shutil.rmtree(lake, ignore_errors=True)

        def upload():
            for t in tables:
                dst = lake / t / f"as_of={AS_OF}" / "data.parquet"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(data_dir / f"{t}.parquet", dst)
            return len(tables)

        timer.run("upload", upload)
        path = lake / key
        run_queries(lambda con: con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{path}')"))
        out = scratch / "local-lake" / "out" / "result.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)

        def write():
            connect().execute(f"COPY ({write_src}) TO '{out}' ({PARQUET_OPTIONS})")
            return out.stat().st_size

        timer.run("write_copy", write)

    elif layer in ("pyarrow", "pyarrow_delayed"):
        import pyarrow.dataset as ds
        from pyarrow import fs as pafs

        def make_fs():
            return pafs.S3FileSystem(
                access_key=DUMMY_KEY,
                secret_key=DUMMY_SECRET,
                endpoint_override=endpoint.removeprefix("http://"),
                scheme="http",
                region=REGION,
                allow_delayed_open=layer == "pyarrow_delayed",
            )

        timer.run("connect", lambda: make_fs() and None)
        s3 = make_fs()

        def upload():
            local = pafs.LocalFileSystem()
            for t in tables:
                pafs.copy_files(
                    str(data_dir / f"{t}.parquet"),
                    f"{BUCKET}/{prefix}/{t}/as_of={AS_OF}/data.parquet",
                    source_filesystem=local,
                    destination_filesystem=s3,
                )
            return len(tables)

        timer.run("upload", upload)

        def bind(con):
            dataset = ds.dataset(f"{BUCKET}/{prefix}/{key}", filesystem=s3, format="parquet")
            con.register("t", dataset)

        run_queries(bind)

        def write_arrow():
            con = connect()
            reader = con.execute(write_src).to_arrow_reader(122_880)
            dst = f"{BUCKET}/{layer}/out/result_arrow.parquet"
            with pq.ParquetWriter(dst, reader.schema, filesystem=s3, compression="zstd") as w:
                for batch in reader:
                    w.write_batch(batch)
            return s3.get_file_info(dst).size

        timer.run("write_arrow", write_arrow)

        def write_local_upload():
            tmp = scratch / "pyarrow-result.parquet"
            connect().execute(f"COPY ({write_src}) TO '{tmp}' ({PARQUET_OPTIONS})")
            dst = f"{BUCKET}/{layer}/out/result_copy.parquet"
            pafs.copy_files(str(tmp), dst, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
            tmp.unlink()
            return s3.get_file_info(dst).size

        timer.run("write_copy", write_local_upload)

    elif layer == "s3fs":
        import s3fs

        def make_fs():
            return s3fs.S3FileSystem(
                key=DUMMY_KEY,
                secret=DUMMY_SECRET,
                endpoint_url=endpoint,
                client_kwargs={"region_name": REGION},
                skip_instance_cache=True,
            )

        timer.run("connect", lambda: make_fs() and None)
        s3 = make_fs()

        def upload():
            src = [str(data_dir / f"{t}.parquet") for t in tables]
            dst = [f"{BUCKET}/{prefix}/{t}/as_of={AS_OF}/data.parquet" for t in tables]
            s3.put(src, dst)
            return len(tables)

        timer.run("upload", upload)

        def bind(con):
            con.register_filesystem(make_fs())
            con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('s3://{BUCKET}/{prefix}/{key}')")

        run_queries(bind)

        def write_copy():
            con = connect()
            con.register_filesystem(make_fs())
            dst = f"s3://{BUCKET}/{layer}/out/result_copy.parquet"
            con.execute(f"COPY ({write_src}) TO '{dst}' ({PARQUET_OPTIONS})")
            return make_fs().size(dst)

        timer.run("write_copy", write_copy)

    return {"layer": layer, "ops": timer.samples, "process_peak_rss_mib": round(_status_kib("VmHWM") / 1024, 1)}


# --- the conditional-put probe ------------------------------------------------------------------------


def probe_conditional_put(endpoint: str, scratch: Path) -> dict:
    """Can a layer write an object only if it does not exist yet (``If-None-Match: *``)?"""
    import duckdb
    import s3fs
    from botocore.exceptions import ClientError
    from pyarrow import fs as pafs

    out: dict[str, str] = {}
    client = boto_client(endpoint)

    def refused(fn) -> str:
        try:
            fn()
        except ClientError as e:
            return (
                f"refused: {e.response['Error'].get('Code')} (HTTP {e.response['ResponseMetadata']['HTTPStatusCode']})"
            )
        except Exception as e:  # the probe records whatever a layer does
            return f"refused: {type(e).__name__}: {str(e)[:120]}"
        return "accepted (overwrote)"

    # boto3: the S3 API itself
    k = "probe/boto3/manifest.json"
    client.put_object(Bucket=BUCKET, Key=k, Body=b"1", IfNoneMatch="*")
    out["boto3 put_object IfNoneMatch='*' on a new key"] = "accepted"
    out["boto3 put_object IfNoneMatch='*' on an existing key"] = refused(
        lambda: client.put_object(Bucket=BUCKET, Key=k, Body=b"2", IfNoneMatch="*")
    )
    etag = client.head_object(Bucket=BUCKET, Key=k)["ETag"]
    client.put_object(Bucket=BUCKET, Key=k, Body=b"3", IfMatch=etag)
    out["boto3 put_object IfMatch=<current ETag> (compare-and-swap)"] = "accepted"
    out["boto3 put_object IfMatch=<stale ETag>"] = refused(
        lambda: client.put_object(Bucket=BUCKET, Key=k, Body=b"4", IfMatch=etag)
    )
    body = client.get_object(Bucket=BUCKET, Key=k)["Body"].read()
    out["boto3 object after the refused writes"] = body.decode()

    # s3fs
    fs = s3fs.S3FileSystem(
        key=DUMMY_KEY, secret=DUMMY_SECRET, endpoint_url=endpoint, client_kwargs={"region_name": REGION}
    )
    k = f"{BUCKET}/probe/s3fs/manifest.json"
    fs.pipe_file(k, b"1", mode="create")
    out["s3fs pipe_file(mode='create') on a new key"] = "accepted"
    out["s3fs pipe_file(mode='create') on an existing key"] = refused(lambda: fs.pipe_file(k, b"2", mode="create"))

    def open_x():
        with fs.open(k, "xb") as f:
            f.write(b"3")

    out["s3fs open(mode='xb') on an existing key"] = refused(open_x)
    out["s3fs object after the refused writes"] = fs.cat_file(k).decode()

    # DuckDB through the registered s3fs: COPY opens for writing ('wb'), there is no 'create if absent'
    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.register_filesystem(fs)
    k2 = f"s3://{BUCKET}/probe/duckdb/x.parquet"
    con.execute(f"COPY (SELECT 1 AS v) TO '{k2}' (FORMAT parquet)")
    out["DuckDB COPY TO s3:// (registered s3fs) on an existing key"] = refused(
        lambda: con.execute(f"COPY (SELECT 2 AS v) TO '{k2}' (FORMAT parquet)")
    )
    out["DuckDB COPY TO s3:// (registered s3fs) reads back v ="] = str(
        con.execute(f"SELECT v FROM read_parquet('{k2}')").fetchone()[0]
    )
    con.close()

    # pyarrow: open_output_stream(path, compression, buffer_size, metadata) has no precondition
    pa = pafs.S3FileSystem(
        access_key=DUMMY_KEY,
        secret_key=DUMMY_SECRET,
        endpoint_override=endpoint.removeprefix("http://"),
        scheme="http",
        region=REGION,
    )
    k = f"{BUCKET}/probe/pyarrow/manifest.json"

    def pa_put(data: bytes):
        with pa.open_output_stream(k) as f:
            f.write(data)

    pa_put(b"1")
    out["pyarrow open_output_stream on an existing key (no precondition in the API)"] = refused(lambda: pa_put(b"2"))
    with pa.open_input_stream(k) as f:
        out["pyarrow object after the second write"] = f.read().decode()

    # local disk reference: O_EXCL
    p = scratch / "probe-local.json"
    p.unlink(missing_ok=True)
    os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    out["local os.open(O_CREAT|O_EXCL) on an existing file"] = refused(
        lambda: os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    )
    return out


# --- the driver ---------------------------------------------------------------------------------------

OPS = ("connect", "upload", "scan", "projection", "point", "write_arrow", "write_copy")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("/tmp/s3bench"))
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--point-id", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    if args.serve:
        serve(args.serve)
        return 0

    if args.worker:
        res = worker(args.worker, args.data, args.endpoint, args.server_pid, args.point_id, args.out)
        print(json.dumps(res))
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = prepare(args.out, args.users)
    print(f"data: {args.users} users, {data['dir']}, prepared in {time.perf_counter() - t0:.1f} s", flush=True)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = start_moto(port, args.out / "moto.log")
    results: dict = {
        "users": args.users,
        "repeat": args.repeat,
        "data": data,
        "versions": versions(),
        "samples": {},
    }
    try:
        boto_client(endpoint).create_bucket(Bucket=BUCKET)
        layers = args.layers.split(",")
        for i in range(args.repeat):
            for layer in layers:  # interleaved, so a slow stretch of the machine hits every layer
                cmd = [sys.executable, "-m", "bench.s3_access", "--worker", layer, "--data", data["dir"]]
                cmd += ["--endpoint", endpoint, "--server-pid", str(server.pid), "--point-id", data["point_id"]]
                cmd += ["--out", str(args.out)]
                t = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    results["samples"].setdefault(layer, []).append({"error": proc.stderr[-3000:]})
                    continue
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                res["worker_wall_s"] = round(time.perf_counter() - t, 3)
                results["samples"].setdefault(layer, []).append(res)
                ops = " ".join(f"{k}={v['wall_s']:.2f}" for k, v in res["ops"].items())
                print(f"repeat {i + 1} {layer:8s} {ops}", flush=True)
        results["conditional_put"] = probe_conditional_put(endpoint, args.out)
        results["server_peak_rss_mib"] = server_peak_rss(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    results["medians"] = medians(results["samples"])
    path = args.out / ("results.json" if args.users == 100_000 else f"results-{args.users}.json")
    path.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwritten: {path}")
    return 0


def server_peak_rss(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("duckdb", "pyarrow", "s3fs", "fsspec", "aiobotocore", "botocore", "boto3", "moto"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def medians(samples: dict) -> dict:
    out: dict = {}
    for layer, runs in samples.items():
        ok = [r for r in runs if "ops" in r]
        for op in OPS:
            vals = [r["ops"][op] for r in ok if op in r["ops"]]
            if not vals:
                continue
            med = {}
            for f in ("wall_s", "cpu_s", "server_cpu_s", "peak_rss_mib"):
                xs = [v[f] for v in vals if v[f] is not None]
                med[f] = round(statistics.median(xs), 3) if xs else None
            med["samples_wall_s"] = [v["wall_s"] for v in vals]
            med["requests"] = vals[-1].get("requests")
            out.setdefault(layer, {})[op] = med
    return out


def print_table(results: dict) -> None:
    print(
        f"\n{results['users']} users, median of {results['repeat']}"
        " (wall s / client CPU s / server CPU s / peak RSS MiB)"
    )
    layers = list(results["medians"])
    print("| operation | " + " | ".join(layers) + " |")
    print("|---|" + "---|" * len(layers))
    for op in OPS:
        cells = []
        for layer in layers:
            m = results["medians"][layer].get(op)
            cells.append(
                "—"
                if m is None
                else f"{m['wall_s']:.3f} / {m['cpu_s']:.2f} / {m['server_cpu_s']:.2f} / {m['peak_rss_mib']}"
            )
        print(f"| {op} | " + " | ".join(cells) + " |")
    print("\nS3 requests per operation (last repeat; GET 206 = ranged GETs):")
    for layer in layers:
        for op in OPS:
            m = results["medians"][layer].get(op)
            if m and m.get("requests") is not None:
                print(f"  {layer:8s} {op:12s} {m['requests']}")
    print("\nconditional put:")
    for k, v in results.get("conditional_put", {}).items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    sys.exit(main())
