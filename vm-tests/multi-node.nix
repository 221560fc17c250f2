# Three machines: `db` runs MariaDB with the user and todo services,
# `gateway` the public gateway, `client` the end-to-end suite and grpcurl.
# Certificates are test-only (certs/gen-test-certs.sh); the gateway reaches
# the backends as https://db:5006x and expects the TLS name "backend".
# The test network has IPv4 and IPv6, and names resolve to IPv6 first (as
# real hosts with AAAA records do): everything listens on both families and
# every allow list names both addresses of a peer.
{
  pkgs,
  module,
  package,
}:
let
  common = import ./common.nix { inherit pkgs; };
  # One call through the gateway to the user service (wrong password).
  login = pkgs.writeShellScript "todoapp-login" ''
    exec grpcurl -max-time 30 -cacert ${common.dir}/ca.crt -import-path ${../protos} -proto user.proto \
      -d '{"username": "nobody", "password": "not-the-password"}' gateway:50051 User/Login
  '';
  addresses = node: [
    node.networking.primaryIPAddress
    node.networking.primaryIPv6Address
  ];
in
pkgs.testers.runNixOSTest {
  name = "todoapp-multi-node";
  globalTimeout = 1800;

  nodes = {
    db = { nodes, ... }: {
      imports = [
        module
        common.install
      ];
      services.todoapp = {
        user = common.user // {
          enable = true;
          listenAddress = "::";
          openFirewall = true;
          allowedClients = addresses nodes.gateway;
        };
        todo = common.todo // {
          enable = true;
          listenAddress = "::";
          openFirewall = true;
          allowedClients = addresses nodes.gateway;
        };
      };
      environment.systemPackages = [ pkgs.iproute2 ];
    };

    gateway = { nodes, ... }: {
      imports = [
        module
        common.install
      ];
      services.todoapp.gateway = common.gateway // {
        enable = true;
        listenAddress = "::";
        openFirewall = true;
        upstream = common.gateway.upstream // {
          user = "https://db:50061";
          todo = "https://db:50062";
          serverName = "backend";
          allowedAddresses = addresses nodes.db;
        };
      };
      environment.systemPackages = [ pkgs.iproute2 ];
    };

    client = {
      imports = [ common.install ];
      environment.systemPackages = [
        package
        pkgs.grpcurl
      ];
    };
  };

  testScript =
    { nodes, ... }:
    ''
      import time

      e2e = "${common.e2e "gateway:50051"} 2>&1"
      login = "${login} 2>&1"


      def backend_pids() -> dict[str, tuple[str, str]]:
          return {
              n: (db.get_unit_property(f"todoapp-{n}.service", "MainPID"), db.get_unit_property(f"todoapp-{n}.service", "NRestarts"))
              for n in ["user", "todo"]
          }


      def until_e2e_passes(what: str, limit: int = 180) -> None:
          t0 = time.monotonic()
          client.wait_until_succeeds(e2e, timeout=limit)
          print(f"{what}: todoapp-e2e passes again after {time.monotonic() - t0:.1f}s")


      start_all()
      db.wait_for_unit("mysql.service", timeout=300)

      with subtest("sockets listen on both hosts, nothing started yet"):
          for host, name, port in [(db, "user", 50061), (db, "todo", 50062), (gateway, "gateway", 50051)]:
              host.wait_for_unit(f"todoapp-{name}.socket", timeout=120)
              host.wait_until_succeeds(f"ss -Hltn 'sport = :{port}' | grep LISTEN", timeout=60)
              state = host.get_unit_property(f"todoapp-{name}.service", "ActiveState")
              assert state == "inactive", f"todoapp-{name}.service is {state} before any connection"

      with subtest("todoapp-e2e from the client"):
          client.wait_for_unit("multi-user.target", timeout=300)
          print(client.succeed(e2e, timeout=300))
          for host, name in [(gateway, "gateway"), (db, "user"), (db, "todo")]:
              host.wait_for_unit(f"todoapp-{name}.service", timeout=60)
              assert host.get_unit_property(f"todoapp-{name}.service", "Type") == "notify"

      with subtest("the gateway reaches the backends over IPv6, resolved first"):
          # Denied IPv6 would still pass the calls above through the IPv4
          # fallback of happy eyeballs; the connections show which was used.
          conns = db.succeed("ss -Htn state established '( sport = :50061 or sport = :50062 )'")
          print(conns)
          assert "[${nodes.gateway.networking.primaryIPv6Address}]" in conns, "no IPv6 connection from the gateway"

      with subtest("restart of the todo service during use"):
          pid = db.get_unit_property("todoapp-todo.service", "MainPID")
          db.succeed("systemctl restart todoapp-todo.service", timeout=120)
          until_e2e_passes("todo service restart")
          assert db.get_unit_property("todoapp-todo.service", "MainPID") != pid

      with subtest("MariaDB restart during use: the services recover without restarting"):
          before = backend_pids()
          db.succeed("systemctl restart mysql.service", timeout=180)
          db.wait_for_unit("mysql.service", timeout=120)
          until_e2e_passes("MariaDB restart")
          after = backend_pids()
          assert before == after, f"backends were restarted: {before} -> {after}"

      with subtest("backend host down: the gateway answers UNAVAILABLE promptly"):
          db.crash()
          t0 = time.monotonic()
          status, out = client.execute(login, timeout=90)
          elapsed = time.monotonic() - t0
          print(out)
          assert status != 0, "the call succeeded with the backend host down"
          assert "Unavailable" in out, f"expected UNAVAILABLE, got: {out}"
          assert elapsed < 15, f"the gateway took {elapsed:.1f}s to answer"
          gateway.succeed("systemctl is-active todoapp-gateway.service")

      with subtest("the gateway recovers when the host returns"):
          db.start()
          db.wait_for_unit("mysql.service", timeout=300)
          db.wait_for_unit("todoapp-todo.socket", timeout=120)
          until_e2e_passes("backend host back", limit=300)
    '';
}
