/// The status page at `/`: one HTML document with no data in it. Its script asks for a
/// token (kept in the browser tab's sessionStorage only; `/#token=…` also works, and the
/// fragment never reaches the server), then reads `/v1/status` every two seconds and
/// draws the pair (with a `cluster:` section), the groups, nodes and latest events. Without a valid token it shows nothing else.
enum StatusPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fulcrum</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .3em; }
  h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
  table { border-collapse: collapse; margin-bottom: .5em; }
  th, td { padding: .2em .7em; border-bottom: 1px solid #ddd; text-align: left; }
  td.n { text-align: right; font-variant-numeric: tabular-nums; }
  .up { color: #070; } .down, .no_mac { color: #b00; font-weight: bold; } .disabled, .pending { color: #888; }
  .warning, .error { color: #b00; } .notice { color: #036; }
  #summary span { margin-right: 1.5em; }
  #login { display: none; } #login input { width: 28em; }
  .muted { color: #777; }
</style>
</head>
<body>
<h1>Fulcrum <span id="host" class="muted"></span></h1>
<form id="login">
  <p>This page needs the API token (the read-only one is enough). It is kept in this tab only.</p>
  <input id="token" type="password" placeholder="token" autocomplete="off"> <button>Show</button>
  <p id="loginError" class="down"></p>
</form>
<div id="main" hidden>
  <div id="summary"></div>
  <div id="cluster"></div>
  <div id="groups"></div>
  <h2>Latest events</h2>
  <table id="events"><thead><tr><th>time</th><th>severity</th><th>kind</th><th>message</th></tr></thead><tbody></tbody></table>
  <p class="muted">Refreshed every 2 s. <span id="updated"></span></p>
</div>
<script>
"use strict";
const store = window.sessionStorage;
if (location.hash.startsWith("#token=")) {
  store.setItem("fulcrum-token", decodeURIComponent(location.hash.slice(7)));
  history.replaceState(null, "", location.pathname);
}
const el = (tag, attrs, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
};
const num = (n) => Number(n).toLocaleString("en");
function login(message) {
  document.getElementById("main").hidden = true;
  document.getElementById("login").style.display = "block";
  document.getElementById("loginError").textContent = message || "";
}
document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  store.setItem("fulcrum-token", document.getElementById("token").value.trim());
  refresh();
});
function render(s) {
  document.getElementById("login").style.display = "none";
  document.getElementById("main").hidden = false;
  document.getElementById("host").textContent = s.host;
  const summary = document.getElementById("summary");
  summary.replaceChildren(
    el("span", {}, "role ", el("b", {id: "role"}, s.role)),
    el("span", {}, "config version ", el("b", {id: "version"}, String(s.version))),
    el("span", {class: "muted"}, s.hash.slice(0, 19)),
    el("span", {}, "flows ", num(s.flows), " of ", num(s.flow_capacity)),
    el("span", {}, "up ", Math.round(s.uptime_seconds), " s"));
  renderCluster(s.cluster);
  const groups = document.getElementById("groups");
  groups.replaceChildren(...s.groups.map((g) => {
    const rows = g.nodes.map((n) => el("tr", {class: "node", "data-group": g.name, "data-node": n.address},
      el("td", {}, n.address + (n.port ? ":" + n.port : "")),
      el("td", {class: n.state}, n.state + (n.health_detail ? " (" + n.health_detail + ")" : "")),
      el("td", {class: "n"}, String(n.weight)),
      el("td", {class: "n"}, num(n.active_flows)),
      el("td", {class: "n"}, num(n.new_flows)),
      el("td", {class: "n"}, num(n.packets)),
      el("td", {class: "n"}, num(n.bytes))));
    if (g.sorry) rows.push(el("tr", {class: "sorry"}, el("td", {}, "sorry " + g.sorry.address), el("td", {class: g.sorry.state}, g.sorry.state),
      el("td", {}, ""), el("td", {}, ""), el("td", {class: "n"}, num(g.sorry_flows)), el("td", {}, ""), el("td", {}, "")));
    return el("section", {class: "group", "data-group": g.name},
      el("h2", {}, g.name + " ", el("span", {class: "muted"},
        g.vip + " " + g.protocol + " " + g.ports.join(",") + " · " + g.method + " · " + g.scheduler +
        " · " + num(g.packets) + " packets, " + num(g.new_flows) + " new flows")),
      el("table", {}, el("thead", {}, el("tr", {}, ...["node", "state", "weight", "active flows", "new flows", "packets", "bytes"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows)));
  }));
  const tbody = document.querySelector("#events tbody");
  tbody.replaceChildren(...s.events.slice().reverse().map((e) => el("tr", {class: "event " + e.severity},
    el("td", {}, e.time.replace("T", " ").slice(0, 19)), el("td", {}, e.severity), el("td", {}, e.kind), el("td", {}, e.message))));
  document.getElementById("updated").textContent = "Last: " + new Date().toLocaleTimeString();
}
const table = (id, heads, rows) => el("table", {id: id},
  el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", {}, h)))), el("tbody", {}, ...rows));
// The active/standby pair: nothing on a standalone LB.
function renderCluster(c) {
  const box = document.getElementById("cluster");
  if (!c) { box.replaceChildren(); return; }
  const roleClass = {active: "up", standby: "muted", fault: "down", initial: "pending"}[c.role] || "";
  const peer = c.peer.role
    ? el("b", {id: "peer-role", class: c.peer.role === "fault" ? "down" : ""}, c.peer.role)
    : el("b", {id: "peer-role", class: "down"}, "not heard");
  const apart = c.peer_config_version !== undefined && c.peer_config_version !== null && c.peer_config_version !== c.config_version;
  const line = el("p", {id: "pair"},
    "this LB ", el("b", {id: "cluster-role", class: roleClass}, c.role), " (" + c.configured_role + "), peer " + c.peer.name + " ", peer,
    " · configuration " + c.config_version + ", peer's " + (c.peer_config_version ?? "unknown"),
    apart ? el("span", {class: "down"}, " (apart)") : "",
    c.held ? el("span", {class: "down", id: "held"}, " · standing down after a dual active: fulcrumctl resume on the LB that should serve") : "",
    c.realtime ? "" : el("span", {class: "down"}, " · heartbeats at normal priority"));
  const t = c.last_transition;
  const last = el("p", {class: "muted", id: "last-transition"}, t
    ? "last transition " + t.time.replace("T", " ").slice(0, 19) + ": " + t.from + " → " + t.to + ", " + t.reason + " (" + c.transitions + " in all)"
    : "no transition yet");
  const links = c.interconnects.map((i, n) => {
    const refused = Object.entries(i.rejected || {});
    const total = refused.reduce((a, [, v]) => a + v, 0);
    return el("tr", {class: "interconnect", "data-interconnect": String(n)},
      el("td", {}, i.local + " ↔ " + i.peer),
      el("td", {class: i.up ? "up" : "down"}, i.up ? "up" : "down"),
      el("td", {class: "n"}, i.last_heard_seconds_ago === undefined || i.last_heard_seconds_ago === null ? "never" : i.last_heard_seconds_ago.toFixed(2) + " s ago"),
      el("td", {class: "n"}, num(i.sent)), el("td", {class: "n"}, num(i.received)),
      el("td", {}, total ? num(total) + " (" + refused.map(([k, v]) => k + " " + v).join(", ") + ")" : "0"));
  });
  const monitors = (c.monitors || []).map((m) => el("tr", {class: "monitor"},
    el("td", {}, m.type), el("td", {}, m.target), el("td", {class: m.up ? "up" : "down"}, m.up ? "up" : "down"),
    el("td", {class: "muted"}, m.action || "failover")));
  const f = c.flow_sync;
  const ms = (v) => v === undefined || v === null ? "-" : v.toFixed(2) + " ms";
  const sync = f ? el("p", {id: "flow-sync"}, "flow sync: ",
    f.sending
      ? el("b", {id: "flow-sync-ready", class: f.peer_ready ? "up" : "down"}, f.peer_ready ? "standby ready" : "standby not ready")
      : el("b", {id: "flow-sync-ready", class: f.ready ? "up" : "down"}, f.ready ? "ready (holds the active's flows)" : "not ready"),
    f.sending
      ? " · " + num(f.records_sent) + " records sent, " + num(f.records_saved) + " saved (the standby's own answer), "
        + num(f.datagrams_resent) + " datagrams resent, lag p50 " + ms(f.lag_p50_ms) + " p99 " + ms(f.lag_p99_ms)
        + (f.last_bulk_seconds !== undefined && f.last_bulk_seconds !== null ? ", last bulk transfer " + f.last_bulk_seconds.toFixed(2) + " s" : "")
      : " · " + num(f.records_received) + " records received, " + num(f.records_held) + " held as flows",
    Object.keys(f.rejected || {}).length ? el("span", {class: "down"}, " · refused " + Object.entries(f.rejected).map(([k, v]) => k + " " + v).join(", ")) : "",
    f.lagging ? el("span", {class: "down"}, " · lagging") : "") : "";
  box.replaceChildren(el("h2", {}, "Pair"), line, last, sync,
    table("interconnects", ["interconnect", "state", "last heard", "sent", "received", "refused"], links),
    table("monitors", ["monitor", "target", "state", "action"], monitors));
}
async function refresh() {
  const token = store.getItem("fulcrum-token");
  if (!token) { login(); return; }
  try {
    const r = await fetch("/v1/status", {headers: {Authorization: "Bearer " + token}, cache: "no-store"});
    if (r.status === 401) { store.removeItem("fulcrum-token"); login("That token was not accepted."); return; }
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
  } catch (e) {
    document.getElementById("updated").textContent = "Cannot reach the API: " + e.message;
  }
}
refresh();
setInterval(() => { if (store.getItem("fulcrum-token")) refresh(); }, 2000);
</script>
</body>
</html>
"""#
}
