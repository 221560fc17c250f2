# One machine with the module's defaults: MariaDB, the user, todo and
# gateway services on loopback; the machine is its own client.
{
  pkgs,
  module,
  package,
}:
let
  common = import ./common.nix { inherit pkgs; };
in
pkgs.testers.runNixOSTest {
  name = "todoapp-single-node";
  globalTimeout = 1200;

  nodes.machine = {
    imports = [
      module
      common.install
    ];
    services.todoapp = {
      gateway = common.gateway // {
        enable = true;
      };
      user = common.user // {
        enable = true;
      };
      todo = common.todo // {
        enable = true;
      };
    };
    environment.systemPackages = [
      package
      pkgs.iproute2
    ];
  };

  testScript = ''
    services = {"gateway": 50051, "user": 50061, "todo": 50062}
    e2e = "${common.e2e "127.0.0.1:50051"} 2>&1"


    def prop(unit: str, name: str) -> str:
        return machine.get_unit_property(unit, name)


    start_all()
    machine.wait_for_unit("mysql.service", timeout=300)

    with subtest("sockets listen, services not started before the first connection"):
        for name, port in services.items():
            machine.wait_for_unit(f"todoapp-{name}.socket", timeout=120)
            machine.wait_until_succeeds(f"ss -Hltn 'sport = :{port}' | grep LISTEN", timeout=60)
            state = prop(f"todoapp-{name}.service", "ActiveState")
            assert state == "inactive", f"todoapp-{name}.service is {state} before any connection"

    with subtest("todoapp-e2e against the gateway"):
        print(machine.succeed(e2e, timeout=300))

    with subtest("the services were started by their sockets, Type=notify"):
        for name in services:
            unit = f"todoapp-{name}.service"
            machine.wait_for_unit(unit, timeout=60)
            assert prop(unit, "Type") == "notify"
            assert f"todoapp-{name}.socket" in prop(unit, "TriggeredBy")
            assert prop(unit, "NRestarts") == "0", f"{unit} restarted"

    with subtest("systemctl stop ends each service cleanly"):
        for name in services:
            unit = f"todoapp-{name}.service"
            machine.succeed(f"systemctl stop {unit}", timeout=60)
            result = (prop(unit, "Result"), prop(unit, "ExecMainStatus"))
            assert result == ("success", "0"), f"{unit} stopped with {result}"

    with subtest("the sockets start the services again"):
        machine.succeed(e2e, timeout=300)
  '';
}
