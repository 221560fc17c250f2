# Three machines each running a MariaDB Galera node (after nixpkgs'
# nixos/tests/mysql/mariadb-galera.nix, rsync SST) with the user, todo and
# gateway services on it, plus a client running the end-to-end suite.
# node1 bootstraps the cluster (an empty gcomm:// address), node2 and node3
# join it. Each gateway forwards to the backends of its own machine, which
# use the local Galera node over its socket (database.createLocally). Then
# node3 crashes: the e2e suite still passes through the other two, and after
# node3 returns it rejoins and passes through its gateway too.
{
  pkgs,
  module,
  package,
}:
let
  common = import ./common.nix { inherit pkgs; };
  inherit (pkgs) lib;
  names = [
    "node1"
    "node2"
    "node3"
  ];

  galeraNode =
    name:
    { config, ... }:
    {
      imports = [
        module
        common.install
      ];
      networking.firewall = {
        # Galera group communication, IST and rsync SST.
        allowedTCPPorts = [
          4444
          4567
          4568
        ];
        allowedUDPPorts = [ 4567 ];
      };
      systemd.services.mysql.path = with pkgs; [
        bash
        gawk
        gnutar
        gzip
        inetutils
        iproute2
        netcat
        procps
        rsync
        socat
        which
      ];
      services.mysql = {
        package = pkgs.mariadb;
        settings.galera = {
          wsrep_on = "ON";
          wsrep_provider = "${pkgs.mariadb-galera}/lib/galera/libgalera_smm.so";
          wsrep_cluster_address =
            if name == "node1" then "gcomm://" else "gcomm://${lib.concatStringsSep "," names}";
          wsrep_cluster_name = "todoapp";
          wsrep_node_address = config.networking.primaryIPAddress;
          wsrep_node_name = name;
          wsrep_sst_method = "rsync";
          binlog_format = "ROW";
          enforce_storage_engine = "InnoDB";
          innodb_autoinc_lock_mode = "2";
        };
      };
      services.todoapp = {
        user = common.user // {
          enable = true;
        };
        todo = common.todo // {
          enable = true;
        };
        gateway = common.gateway // {
          enable = true;
          listenAddress = "::";
          openFirewall = true;
        };
      };
    };
in
pkgs.testers.runNixOSTest {
  name = "todoapp-cluster";
  globalTimeout = 2400;

  nodes = lib.genAttrs names galeraNode // {
    client = {
      imports = [ common.install ];
      environment.systemPackages = [ package ];
    };
  };

  testScript = ''
    # The test gateway certificate names "gateway", not the machines.
    def e2e(node: str) -> str:
        return f"${common.e2e "{node}:50051"} --server-name gateway 2>&1"


    def cluster_size(machine) -> str:
        return machine.succeed(
            "mysql -N -e \"SHOW STATUS LIKE 'wsrep_cluster_size'\" | cut -f2"
        ).strip()


    # The bootstrap node first, then the joiners one at a time (each takes
    # a state transfer from a synced member).
    node1.start()
    node1.wait_for_unit("mysql.service", timeout=300)
    for joiner in [node2, node3]:
        joiner.start()
        joiner.wait_for_unit("mysql.service", timeout=600)
    node1.wait_until_succeeds("test $(mysql -N -e \"SHOW STATUS LIKE 'wsrep_cluster_size'\" | cut -f2) = 3", timeout=120)
    client.start()
    client.wait_for_unit("multi-user.target", timeout=300)

    with subtest("todoapp-e2e through every node's gateway"):
        for node in ["node1", "node2", "node3"]:
            print(client.succeed(e2e(node), timeout=300))

    with subtest("a node crashes: the others go on"):
        node3.crash()
        node1.wait_until_succeeds("test $(mysql -N -e \"SHOW STATUS LIKE 'wsrep_cluster_size'\" | cut -f2) = 2", timeout=120)
        for node in ["node1", "node2"]:
            print(client.succeed(e2e(node), timeout=300))

    with subtest("the crashed node rejoins and serves again"):
        node3.start()
        node3.wait_for_unit("mysql.service", timeout=600)
        node1.wait_until_succeeds("test $(mysql -N -e \"SHOW STATUS LIKE 'wsrep_cluster_size'\" | cut -f2) = 3", timeout=300)
        assert cluster_size(node3) == "3"
        client.wait_until_succeeds(e2e("node3"), timeout=300)
  '';
}
