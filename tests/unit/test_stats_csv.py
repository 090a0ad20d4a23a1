"""/stats.csv read the way HAProxy tools read it: by header name and by position."""

import csv
import io

from lbcore.model import DRAIN, MAINT
from lbcore.stats.csvview import render_csv
from lbcore.stats.snapshot import snapshot
from tests.unit.test_stats_snapshot import add_traffic, make_runtime

# HAProxy 2.6's static fields, as its management guide (9.1) and `show stat` list them.
HAPROXY_26_HEADER = (
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
    "status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,"
    "type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,"
    "hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,"
    "comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,"
    "agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,"
    "agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,"
    "dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,"
    "ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,"
    "agg_server_check_status,agg_check_status"
).split(",")


def parse(text: str) -> tuple[list[str], list[dict]]:
    lines = text.splitlines()
    assert lines[0].startswith("# ")
    reader = csv.reader(io.StringIO(text[2:]))
    header = next(reader)
    assert header[-1] == ""  # HAProxy ends every line with a comma
    header = header[:-1]
    rows = []
    for values in reader:
        assert len(values) == len(header) + 1 and values[-1] == "", values
        rows.append(dict(zip(header, values)))
    return header, rows


def render(runtime) -> str:
    return render_csv(snapshot(runtime)).decode("utf-8")


def test_header_is_haproxys_column_order():
    header, _ = parse(render(make_runtime()))
    assert header == HAPROXY_26_HEADER
    # Tools that index by position: the classic offsets.
    assert header.index("status") == 17 and header.index("check_status") == 36
    assert header.index("hrsp_2xx") == 40 and header.index("addr") == 73


def test_rows_go_frontend_servers_backend_per_proxy():
    _, rows = parse(render(make_runtime()))
    assert [(r["pxname"], r["svname"], r["type"]) for r in rows] == [
        ("keystone", "FRONTEND", "0"),
        ("keystone", "ks1", "2"), ("keystone", "ks2", "2"), ("keystone", "ks3", "2"),
        ("keystone", "BACKEND", "1"),
        ("galera", "FRONTEND", "0"),
        ("galera", "db1", "2"), ("galera", "db2", "2"),
        ("galera", "BACKEND", "1"),
    ]
    # One proxy id per name; server ids count from 1 within it.
    assert {r["iid"] for r in rows if r["pxname"] == "keystone"} == {"1"}
    assert [r["sid"] for r in rows if r["type"] == "2" and r["pxname"] == "keystone"] == ["1", "2", "3"]


def test_values_and_states_as_haproxy_writes_them():
    runtime = make_runtime()
    add_traffic(runtime)
    be = runtime.backends["keystone"]
    be.by_name["ks2"].set_admin(DRAIN)
    be.by_name["ks3"].set_admin(MAINT)
    runtime.backends["galera"].by_name["db2"].set_weight(0)
    _, rows = parse(render(runtime))
    by = {(r["pxname"], r["svname"]): r for r in rows}

    fe = by[("keystone", "FRONTEND")]
    assert fe["status"] == "OPEN" and fe["mode"] == "http"
    assert (fe["scur"], fe["smax"], fe["stot"], fe["slim"]) == ("2", "3", "3", "10000")
    assert (fe["bin"], fe["bout"], fe["req_tot"]) == ("1200", "34000", "7")
    assert (fe["hrsp_2xx"], fe["hrsp_5xx"]) == ("5", "2")

    ks1 = by[("keystone", "ks1")]
    assert ks1["status"] == "UP" and ks1["weight"] == "10"
    assert (ks1["act"], ks1["bck"]) == ("1", "0")
    assert ks1["check_status"] == "L7OK" and ks1["check_code"] == "200" and ks1["check_duration"] == "3"
    assert ks1["check_desc"] == "Layer7 check passed"
    assert (ks1["check_rise"], ks1["check_fall"], ks1["check_health"]) == ("2", "3", "4")
    assert ks1["econ"] == "1" and ks1["addr"] == "10.0.0.11:5000"
    assert (ks1["ctime"], ks1["rtime"], ks1["ttime"]) == ("3", "40", "50")
    assert by[("keystone", "ks2")]["status"] == "DRAIN"
    assert by[("keystone", "ks2")]["slim"] == "100"
    ks3 = by[("keystone", "ks3")]
    assert ks3["status"] == "MAINT" and (ks3["act"], ks3["bck"]) == ("0", "1")
    assert ks3["check_status"] == "INI"

    be_row = by[("keystone", "BACKEND")]
    # ks1 alone takes new work now.
    assert (be_row["status"], be_row["act"], be_row["bck"], be_row["weight"]) == ("UP", "1", "0", "10")
    assert be_row["algo"] == "roundrobin" and be_row["econ"] == "1"

    db2 = by[("galera", "db2")]
    assert db2["status"] == "NOLB"
    # tcp and unchecked: no HTTP or check columns filled.
    assert db2["hrsp_2xx"] == "" and db2["check_status"] == "" and db2["chkfail"] == ""
    assert by[("galera", "FRONTEND")]["req_tot"] == ""
    assert by[("galera", "BACKEND")]["mode"] == "tcp"


def test_down_backend_and_server_rows():
    runtime = make_runtime()
    for server in runtime.backends["galera"].servers:
        server.set_health(False, "L4CON")
        server.check_status = "L4CON"
    _, rows = parse(render(runtime))
    by = {(r["pxname"], r["svname"]): r for r in rows}
    assert by[("galera", "BACKEND")]["status"] == "DOWN"
    assert by[("galera", "BACKEND")]["chkdown"] == "1"
    assert by[("galera", "db1")]["status"] == "DOWN"
    assert by[("galera", "db1")]["lastchg"] == "0"


def test_fields_with_commas_or_quotes_are_quoted():
    snap = snapshot(make_runtime())
    snap["backends"]["galera"]["servers"][0]["name"] = 'odd,"name"'
    text = render_csv(snap).decode()
    assert '"odd,""name"""' in text
    _, rows = parse(text)
    assert any(r["svname"] == 'odd,"name"' for r in rows)
