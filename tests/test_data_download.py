"""Downloads and text8, against a real HTTP server on 127.0.0.1 serving a small text8-shaped zip."""

import http.server
import io
import json
import socket
import threading
import zipfile

import numpy as np
import pytest

from nanodd.data import VOCAB, DataError, Text8Spec, download, load_split, prepare

N_CHARS = 20_000


class Server:
    """Serves ``files`` by path; optional Range support and a cut-off after ``cut`` body bytes."""

    def __init__(self):
        self.files, self.requests, self.range_ok, self.cut, self.content_type = {}, [], True, None, None
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                state.requests.append((self.path, self.headers.get("Range")))
                body = state.files.get(self.path)
                if body is None:
                    return self.send_error(404, "Not Found")
                asked = self.headers.get("Range") if state.range_ok else None
                start = int(asked[len("bytes=") : -1]) if asked else 0
                if start >= len(body) > 0:
                    return self.send_error(416)
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                if state.content_type:
                    self.send_header("Content-Type", state.content_type)
                self.end_headers()
                self.wfile.write(body[start:][: state.cut])
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def text8_bytes():
    ids = np.random.default_rng(0).integers(0, 27, size=N_CHARS)
    return np.frombuffer(VOCAB.encode(), np.uint8)[ids].tobytes()


def serve_text8(server, zip_bytes, n_chars=N_CHARS):
    server.files["/text8.zip"] = zip_bytes
    return Text8Spec(
        url=server.base + "/text8.zip",
        zip_size=len(zip_bytes),
        n_chars=n_chars,
        splits=(n_chars * 9 // 10, n_chars // 20, n_chars // 20),
    )


def test_prepare_text8_downloads_verifies_and_splits(server, text8_bytes, tmp_path, capsys):
    spec = serve_text8(server, make_zip({"text8": text8_bytes}))
    out = prepare("text8", tmp_path, seq_len=64, text8=spec)
    err = capsys.readouterr().err
    assert "100%" in err and "MB/s" in err and "prepared" in err
    meta = json.loads((out / "meta.json").read_text())
    assert out == tmp_path / "text8" and meta["sizes"] == {"train": 18_000, "val": 1_000, "test": 1_000}
    assert meta["vocab"] == VOCAB and meta["source"] == "text8" and len(meta["sha256"]) == 64
    joined = b"".join(
        VOCAB.encode()[i : i + 1] for i in np.concatenate([load_split(out, s) for s in ("train", "val", "test")])
    )
    assert joined == text8_bytes
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.tmp"))
    assert prepare("text8", tmp_path, seq_len=64, text8=spec, progress=False) == out
    assert len(server.requests) == 1


def test_prepare_text8_resumes_a_partial_zip(server, text8_bytes, tmp_path):
    zip_bytes = make_zip({"text8": text8_bytes})
    spec = serve_text8(server, zip_bytes)
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "text8.zip.part").write_bytes(zip_bytes[:5000])
    out = prepare("text8", tmp_path, seq_len=64, text8=spec, progress=False)
    assert server.requests == [("/text8.zip", "bytes=5000-")]
    assert (tmp_path / "downloads" / "text8.zip").read_bytes() == zip_bytes
    assert len(load_split(out, "train")) == 18_000


def test_malformed_url_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"could not download https://\[::1/x: .*data.source='builtin'"):
        download("https://[::1/x", tmp_path / "f", progress=False)


def test_download_resumes_a_partial_file_with_range(server, tmp_path):
    body = bytes(range(256)) * 400
    server.files["/f.bin"] = body
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(body[:30_000])
    assert download(server.base + "/f.bin", dest, expected_size=len(body), progress=False) == dest
    assert dest.read_bytes() == body and server.requests == [("/f.bin", "bytes=30000-")]
    assert not (tmp_path / "f.bin.part").exists()


def test_download_restarts_when_the_server_ignores_range(server, tmp_path):
    body = bytes(range(256)) * 400
    server.files["/f.bin"], server.range_ok = body, False
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes")
    download(server.base + "/f.bin", tmp_path / "f.bin", expected_size=len(body), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == body


def test_interrupted_download_keeps_the_part_and_resumes(server, tmp_path):
    body = bytes(range(256)) * 400
    server.files["/f.bin"], server.cut = body, 40_000
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError, match="stopped at 40,000 of 102,400 bytes; run again to resume"):
        download(server.base + "/f.bin", dest, expected_size=len(body), progress=False)
    assert not dest.exists() and (tmp_path / "f.bin.part").stat().st_size == 40_000
    server.cut = None
    download(server.base + "/f.bin", dest, expected_size=len(body), progress=False)
    assert dest.read_bytes() == body and server.requests[-1][1] == "bytes=40000-"


def test_download_of_the_wrong_size_is_refused(server, tmp_path):
    server.files["/f.bin"] = b"x" * 1000
    with pytest.raises(DataError, match="is 1,000 bytes, not the expected 999"):
        download(server.base + "/f.bin", tmp_path / "f.bin", expected_size=999, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_404_names_url_and_offline_options(server, tmp_path):
    url = server.base + "/missing.zip"
    with pytest.raises(DataError) as e:
        download(url, tmp_path / "x.zip", progress=False)
    msg = str(e.value)
    assert url in msg and "404" in msg and "data.source='builtin'" in msg and "local" in msg
    assert "\n" not in msg


def test_connection_refused_names_url_and_offline_options(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/text8.zip"
    spec = Text8Spec(url=url, zip_size=10, n_chars=10, splits=(8, 1, 1))
    with pytest.raises(DataError) as e:
        prepare("text8", tmp_path, seq_len=1, text8=spec, progress=False)
    msg = str(e.value)
    assert url in msg and "refused" in msg and "data.source='builtin'" in msg and "local" in msg


@pytest.mark.parametrize(
    "members, message",
    [
        ({"text8": b"a" * N_CHARS, "extra": b"b"}, "unexpected members"),
        ({"other": b"a" * N_CHARS}, "unexpected members"),
        ({"../x": b"a" * N_CHARS}, "unsafe member paths"),
        ({"/tmp/x": b"a" * N_CHARS}, "unsafe member paths"),
        ({"a\\..\\..\\x": b"a" * N_CHARS}, "unsafe member paths"),
        ({"text8": b"a" * (N_CHARS - 1)}, "19,999 bytes, expected 20,000"),
        ({"text8": b"A" * N_CHARS}, "other than ' ' and a-z"),
    ],
)
def test_bad_zip_members_are_refused(server, tmp_path, members, message):
    spec = serve_text8(server, make_zip(members))
    with pytest.raises(DataError, match=message):
        prepare("text8", tmp_path / "cache", seq_len=16, text8=spec, progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "cache" / "text8").exists()
    assert list((tmp_path / "cache" / "downloads").iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_zip_is_refused_and_removed(server, tmp_path, text8_bytes, damage):
    good = make_zip({"text8": text8_bytes})
    bad = {
        "truncate": good[: len(good) // 2],
        "garbage": b"\x00" * len(good),
        "flip": good[:100] + bytes([good[100] ^ 0xFF]) + good[101:],
    }[damage]
    spec = serve_text8(server, bad)
    with pytest.raises(DataError, match="corrupt or truncated .*; removed it, run again"):
        prepare("text8", tmp_path, seq_len=16, text8=spec, progress=False)
    assert not (tmp_path / "downloads" / "text8.zip").exists()


def test_prepare_from_a_url(server, tmp_path):
    server.files["/books/My%20Book.txt"] = ("Call me Ishmael. " * 200).encode()
    out = prepare(server.base + "/books/My%20Book.txt", tmp_path, seq_len=32, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert out.name.startswith("url-my-book-") and meta["n_chars"] == len("call me ishmael " * 200) - 1
