# Checks nixos-modules/network.nix (how a backend's sandbox follows its
# database URL) with builtins only, so that CI runs it without nixpkgs:
#
#   nix-instantiate --eval --strict --json vm-tests/network-eval.nix
let
  network = import ../nixos-modules/network.nix;
  parse = network.parseDatabaseUrl;
  local = "mysql://todoapp-user@localhost/todoapp_user?socket=/run/mysqld/mysqld.sock";
  backend =
    url: extra:
    network.backendNetwork (
      {
        name = "user";
        inherit url;
        localDatabase = true;
        allowedAddresses = [ ];
      }
      // extra
    );

  checks = {
    "sqlite" =
      parse "sqlite://user.db" == {
        kind = "sqlite";
        host = null;
      };
    "local unix socket" =
      parse local == {
        kind = "unix";
        host = "localhost";
      };
    "socket among other parameters" =
      (parse "mysql://u@x/db?ssl-mode=disabled&socket=/s.sock").kind == "unix";
    "localhost without socket is TCP" =
      parse "mysql://u@localhost/db" == {
        kind = "tcp";
        host = "localhost";
      };
    "IPv4 with password and port" =
      parse "mysql://u:p@ss@127.0.0.1:3306/db" == {
        kind = "tcp";
        host = "127.0.0.1";
      };
    "IPv6 literal" =
      parse "mariadb://u@[fd00::5]:3306/db" == {
        kind = "tcp";
        host = "fd00::5";
      };
    "IPv6 loopback" = (parse "mysql://u@[::1]/db").host == "::1";
    "name" = (parse "mysql://u@db.internal/db?ssl-mode=required").host == "db.internal";
    "not a database URL" = (parse "postgres://x/db").kind == "unknown";

    # createLocally (localDatabase) with the local socket URL: offline,
    # ordered after the local MariaDB.
    "local socket: offline, after mysql" =
      let
        n = backend local { };
      in
      n.privateNetwork && n.afterMysql && n.problems == [ ];
    "sqlite: offline, not after mysql" =
      let
        n = backend "sqlite://user.db" { };
      in
      n.privateNetwork && !n.afterMysql;
    # createLocally with a TCP URL: the unit must get network access.
    "createLocally + TCP 127.0.0.1: network, loopback allowed, after mysql" =
      let
        n = backend "mysql://todoapp:pw@127.0.0.1:3306/todoapp_user" { };
      in
      !n.privateNetwork && n.networkAllow == [ "localhost" ] && n.afterMysql && n.problems == [ ];
    "createLocally + TCP [::1]: network" =
      let
        n = backend "mysql://todoapp:pw@[::1]:3306/todoapp_user" { };
      in
      !n.privateNetwork && n.networkAllow == [ "localhost" ];
    "createLocally + remote IPv4 TCP: address allowed, not after mysql" =
      let
        n = backend "mysql://todoapp@10.0.0.5/todoapp_user" { };
      in
      !n.privateNetwork
      &&
        n.networkAllow == [
          "localhost"
          "10.0.0.5"
        ]
      && !n.afterMysql;
    "remote IPv6 TCP: address allowed" =
      (backend "mysql://todoapp@[fd00::5]:3306/todoapp_user" { localDatabase = false; }).networkAllow == [
        "localhost"
        "fd00::5"
      ];
    "remote name, both families listed" =
      let
        n = backend "mysql://todoapp@db.internal/todoapp_user" {
          allowedAddresses = [
            "10.0.0.5"
            "fd00::5"
          ];
        };
      in
      !n.privateNetwork
      &&
        n.networkAllow == [
          "localhost"
          "10.0.0.5"
          "fd00::5"
        ]
      && n.problems == [ ];
    "remote name without allowedAddresses is refused" =
      (backend "mysql://todoapp@db.internal/todoapp_user" { }).problems == [
        "services.todoapp.user.database.url connects to db.internal over TCP, but services.todoapp.database.allowedAddresses is empty: the service may reach only the addresses listed there (IPAddressAllow= takes addresses, not names), so list the database host's IPv4 and IPv6 addresses."
      ];
    "an address already listed is not repeated" =
      (backend "mysql://todoapp@10.0.0.5/db" { allowedAddresses = [ "10.0.0.5" ]; }).networkAllow == [
        "localhost"
        "10.0.0.5"
      ];
  };
  failed = builtins.filter (name: !checks.${name}) (builtins.attrNames checks);
in
if failed == [ ] then
  "network-eval: ${toString (builtins.length (builtins.attrNames checks))} checks passed"
else
  throw "network-eval: failed: ${builtins.concatStringsSep "; " failed}"
