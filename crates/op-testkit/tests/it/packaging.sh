#!/bin/sh
set -eu
fail() { echo "FAILED: $*"; exit 1; }
step() { echo "== $*"; }
cd /opkg-test

step "install 0.1.0"
dpkg -i v1/op-manager_0.1.0_*.deb v1/op-agent_0.1.0_*.deb v1/agentcli_0.1.0_*.deb
for f in /usr/bin/op-manager /usr/bin/op-agent /usr/bin/agentcli \
         /lib/systemd/system/op-manager.service /lib/systemd/system/op-agent.service \
         /etc/op-agent/manager.toml /etc/op-agent/agent.toml /etc/op-agent/agentcli.toml; do
  [ -e "$f" ] || fail "$f is missing after install"
done
getent passwd op-manager >/dev/null || fail "no op-manager user"
[ "$(stat -c %U:%a /var/lib/op-manager)" = op-manager:700 ] || fail "/var/lib/op-manager: $(stat -c %U:%a /var/lib/op-manager)"
[ "$(stat -c %a /etc/op-agent/agent.toml)" = 600 ] || fail "agent.toml must be 0600"
[ "$(stat -c %G:%a /etc/op-agent/manager.toml)" = op-manager:640 ] || fail "manager.toml: $(stat -c %G:%a /etc/op-agent/manager.toml)"
[ -d /var/lib/op-agent ] || fail "no /var/lib/op-agent"
[ -d /data/op-agent/src ] || fail "no deploy dir"
[ "$(readlink /usr/bin/agentCli)" = agentcli ] || fail "no agentCli symlink (the seed's name)"
/usr/bin/agentCli -v | grep -q '^agentcli ' || fail "agentCli -v"

step "units"
systemd-analyze verify /lib/systemd/system/op-manager.service /lib/systemd/system/op-agent.service
grep -q '^Restart=on-failure' /lib/systemd/system/op-agent.service || fail "agent unit restarts"
grep -q '^Restart=on-failure' /lib/systemd/system/op-manager.service || fail "manager unit restarts"

# Starts "$@" in the background, waits up to 60 s for WORD on its stdout, then stops it.
serve() {
  word="$1"; shift
  "$@" >/tmp/serve.out 2>/tmp/serve.err &
  pid=$!
  i=0
  until grep -q "$word" /tmp/serve.out; do
    i=$((i + 1))
    if [ $i -gt 600 ] || ! kill -0 $pid 2>/dev/null; then
      cat /tmp/serve.err; fail "$* did not start"
    fi
    sleep 0.1
  done
  kill -TERM $pid; wait $pid || true
}
step "the daemons start on the shipped configs"
serve "op-manager listening" runuser -u op-manager -- /usr/bin/op-manager \
  --config /etc/op-agent/manager.toml --listen 127.0.0.1:0 --raft-listen 127.0.0.1:0
[ -f /var/lib/op-manager/state.db ] || fail "the manager wrote no state"
[ "$(stat -c %a /var/lib/op-manager/state.db)" = 600 ] || fail "state.db is $(stat -c %a /var/lib/op-manager/state.db), not 600"
[ "$(stat -c %U /var/lib/op-manager/admin.token)" = op-manager ] || fail "token owner"
serve "listening on" /usr/bin/op-agent --config /etc/op-agent/agent.toml --listen 127.0.0.1:0
[ -f /var/lib/op-agent/agent.db ] || fail "the agent wrote no state"

step "upgrade to 0.1.1"
echo "# edited by the operator" >> /etc/op-agent/agent.toml
echo "# edited by the operator" >> /etc/op-agent/manager.toml
cp /var/lib/op-manager/admin.token /tmp/admin.before
dpkg -i v2/op-manager_0.1.1_*.deb v2/op-agent_0.1.1_*.deb v2/agentcli_0.1.1_*.deb
[ "$(dpkg-query -W -f='${Version}' op-agent)" = 0.1.1 ] || fail "op-agent not upgraded"
[ "$(dpkg-query -W -f='${Version}' op-manager)" = 0.1.1 ] || fail "op-manager not upgraded"
grep -q "edited by the operator" /etc/op-agent/agent.toml || fail "upgrade overwrote agent.toml"
grep -q "edited by the operator" /etc/op-agent/manager.toml || fail "upgrade overwrote manager.toml"
cmp -s /tmp/admin.before /var/lib/op-manager/admin.token || fail "upgrade changed the manager's state"
[ -f /var/lib/op-agent/agent.db ] || fail "upgrade lost the agent's state"
serve "op-manager listening" runuser -u op-manager -- /usr/bin/op-manager \
  --config /etc/op-agent/manager.toml --listen 127.0.0.1:0 --raft-listen 127.0.0.1:0

step "remove"
dpkg -r op-agent op-manager agentcli
[ ! -e /usr/bin/op-agent ] && [ ! -e /usr/bin/op-manager ] && [ ! -e /usr/bin/agentcli ] && [ ! -L /usr/bin/agentCli ] || fail "binaries left"
[ ! -e /lib/systemd/system/op-agent.service ] || fail "unit left"
[ -f /etc/op-agent/agent.toml ] || fail "remove must keep the config"
[ -f /var/lib/op-manager/state.db ] || fail "remove must keep the state"

step "purge"
dpkg -P op-agent op-manager agentcli
[ ! -e /etc/op-agent/agent.toml ] && [ ! -e /etc/op-agent/manager.toml ] || fail "purge must remove the config"
[ -f /var/lib/op-manager/state.db ] && [ -f /var/lib/op-agent/agent.db ] || fail "purge must keep the state"
echo ALL-OK
