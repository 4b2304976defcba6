"""The durable local AWS (found by a review; these tests fail before the fix):

- a torn last journal line (SIGKILL mid-append) is cut off before the journal is appended to again, so the
  next acknowledged write is not glued to the fragment and lost on the following restart;
- no web page can use it: requests with an ``Origin`` header, CORS preflights, moto's own ``/moto-api``
  (a cross-site form POST to ``/moto-api/reset`` wiped the durable state) and Host headers that do not name
  this machine (DNS rebinding) are refused; the SDK clients of the stack still work.

Each phase runs in a fresh process, as a restart would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

PRELUDE = textwrap.dedent('''
    import sys, json, urllib.request, urllib.error, http.client, boto3
    from pathlib import Path
    from openkcm.local.durable_moto import DurableMotoServer
    d = Path(sys.argv[1])
    server = DurableMotoServer(d, port=0)
    endpoint = server.start()
    port = server._server.server_address[1]
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    def table():
        ddb.create_table(TableName="t", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST")
    def keys():
        return sorted(i["pk"]["S"] for i in ddb.scan(TableName="t")["Items"])
    def send(method, path, body=b"", headers=None):
        req = urllib.request.Request(endpoint + path, method=method, data=body or None, headers=headers or {})
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, r.headers.get("Access-Control-Allow-Origin"), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Access-Control-Allow-Origin"), e.read()
''')


def phase(d: Path, code: str) -> str:
    out = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code) + "\nserver.stop()\n", str(d)],
                         check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_torn_journal_tail_does_not_swallow_later_acknowledged_writes(tmp_path):
    phase(tmp_path, 'table(); ddb.put_item(TableName="t", Item={"pk": {"S": "before-crash"}})')
    journal = next(tmp_path.glob("moto-journal-*.log"))
    with open(journal, "a") as fh:  # SIGKILL mid-append: a torn, never acknowledged last line
        fh.write('{"m":"POST","p":"/","q":"","h":{"HTTP_X_A')
    # restart 1: replay stops at the torn line, the fragment is cut off, then an acknowledged write
    assert phase(tmp_path, 'ddb.put_item(TableName="t", Item={"pk": {"S": "acked-after-restart"}}); print(keys())') \
        == "['acked-after-restart', 'before-crash']"
    assert journal.read_bytes().endswith(b"\n") and b'HTTP_X_A"' not in journal.read_bytes()
    # restart 2: that acknowledged write is still there
    assert phase(tmp_path, "print(keys())") == "['acked-after-restart', 'before-crash']"


def test_no_web_page_can_read_the_local_dynamodb(tmp_path):
    out = phase(tmp_path, '''
        table(); ddb.put_item(TableName="t", Item={"pk": {"S": "wrapped-l2-blob"}})
        print("preflight", *send("OPTIONS", "/", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-amz-target,content-type"})[:2])
        status, allow, body = send("POST", "/", b'{"TableName":"t"}', {
            "Origin": "https://evil.example", "X-Amz-Target": "DynamoDB_20120810.Scan",
            "Content-Type": "application/x-amz-json-1.0"})
        print("scan", status, allow, b"wrapped-l2-blob" in body)
        print("sdk", keys())  # the stack's own clients send no Origin
    ''')
    assert out.splitlines() == ["preflight 403 None", "scan 403 None False", "sdk ['wrapped-l2-blob']"], out


def test_cross_origin_form_post_to_moto_api_reset_wipes_nothing(tmp_path):
    out = phase(tmp_path, '''
        table(); ddb.put_item(TableName="t", Item={"pk": {"S": "tenant-data"}})
        # what <form method=post action="http://127.0.0.1:4566/moto-api/reset"> on any web page sends
        print(send("POST", "/moto-api/reset", b"x=1", {
            "Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"})[0])
        print(send("POST", "/moto-api/reset")[0])  # not even without Origin
        print(send("GET", "/moto-api/")[0])
    ''')
    assert out.splitlines() == ["403", "403", "403"], out
    assert phase(tmp_path, 'print(ddb.list_tables()["TableNames"])') == "['t']", "reset made durable: tables gone"


def test_dns_rebinding_host_is_refused_loopback_names_are_not(tmp_path):
    out = phase(tmp_path, '''
        table()
        body = b'{}'
        hdrs = {"X-Amz-Target": "DynamoDB_20120810.ListTables", "Content-Type": "application/x-amz-json-1.0",
                "Authorization": "AWS4-HMAC-SHA256 Credential=x/20240101/us-east-1/dynamodb/aws4_request, "
                                 "SignedHeaders=host, Signature=0"}
        for host in ("evil.example", f"evil.example:{port}", "localhost", f"localhost:{port}",
                     f"127.0.0.1:{port}", "[::1]"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/", body=body, headers={**hdrs, "Host": host})
            print(host.split(":")[0], conn.getresponse().status)
            conn.close()
    ''')
    assert out.splitlines() == ["evil.example 403", "evil.example 403", "localhost 200", "localhost 200",
                                "127.0.0.1 200", "[ 200"], out
