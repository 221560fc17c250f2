# Evaluates nixos-modules/todoapp.nix with only nixpkgs' lib (no packages,
# no NixOS): the NixOS options it sets are declared here loosely and pkgs is
# a stub. Catches type errors, wrong defaults and broken assertions without
# building anything. Used by scripts/check-nix.sh when NIXPKGS_LIB points to
# a nixpkgs lib/ directory:
#
#   nix-instantiate --eval --strict --json vm-tests/module-eval.nix --arg lib 'import /path/to/lib'
{ lib }:
let
  inherit (lib) types mkOption;

  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  pkgs = {
    stdenv = {
      hostPlatform.system = "x86_64-linux";
      buildPlatform.canExecute = _: true;
    };
    formats.toml = _: {
      type = types.attrsOf types.anything;
      generate = name: _: "/nix/store/00000000000000000000000000000000-${name}";
    };
    runCommand =
      name: _: _:
      "/nix/store/00000000000000000000000000000000-${name}";
    mariadb = fakePackage "mariadb";
  };

  # The NixOS options the module sets, declared loosely.
  nixosStub = {
    options = {
      assertions = mkOption {
        type = types.listOf types.attrs;
        default = [ ];
      };
      users.users = mkOption {
        type = types.attrsOf types.attrs;
        default = { };
      };
      users.groups = mkOption {
        type = types.attrsOf types.attrs;
        default = { };
      };
      networking.firewall.allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
      systemd.services = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      systemd.sockets = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      services.mysql = mkOption {
        type = types.anything;
        default = { };
      };
    };
  };

  evalWith =
    pkgs: config:
    (lib.evalModules {
      modules = [
        ../nixos-modules/todoapp.nix
        nixosStub
        config
      ];
      specialArgs = { inherit pkgs; };
    }).config;
  eval = evalWith pkgs;

  keys = "/run/keys/todoapp";
  tls = name: {
    certFile = "${keys}/${name}.crt";
    keyFile = "${keys}/${name}.key";
  };

  allOnOneHost = {
    services.todoapp = {
      package = fakePackage "todoapp";
      gateway = {
        enable = true;
        listenAddress = "::";
        openFirewall = true;
        tls = tls "gateway";
        upstream = {
          caFile = "${keys}/internal-ca.crt";
          clientCertFile = "${keys}/gateway-client.crt";
          clientKeyFile = "${keys}/gateway-client.key";
        };
        jwt.publicKeyFiles = [
          "${keys}/jwt.pub"
          "${keys}/jwt-old.pub"
        ];
        settings.max_message_bytes = 131072;
      };
      user = {
        enable = true;
        tls = tls "user" // {
          clientCaFile = "${keys}/internal-ca.crt";
        };
        jwt.privateKeyFile = "${keys}/jwt.key";
      };
      todo = {
        enable = true;
        tls = tls "todo" // {
          clientCaFile = "${keys}/internal-ca.crt";
        };
      };
    };
  };

  failedAssertions = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);

  single = eval allOnOneHost;
  svc = name: single.systemd.services."todoapp-${name}";
  sock = name: single.systemd.sockets."todoapp-${name}";

  remoteDb = eval (
    lib.recursiveUpdate allOnOneHost {
      services.todoapp = {
        database.createLocally = false;
        database.allowedAddresses = [ "10.0.0.5" ];
        user.database = {
          url = "mysql://todoapp@10.0.0.5/todoapp_user";
          passwordFile = "${keys}/db-password";
        };
      };
    }
  );

  keyInStore = eval (
    lib.recursiveUpdate allOnOneHost {
      services.todoapp.user.tls.keyFile = "/nix/store/00000000000000000000000000000000-user.key";
    }
  );

  limits = eval (
    lib.recursiveUpdate allOnOneHost {
      services.todoapp = {
        gateway.fairShare = {
          readsPerSec = 10;
          maxInFlightPerUser = 4;
        };
        todo.quota.maxEntries = 500;
      };
    }
  );

  gatewayOnly = eval {
    services.todoapp = {
      inherit (allOnOneHost.services.todoapp) package;
      gateway = allOnOneHost.services.todoapp.gateway // {
        upstream = allOnOneHost.services.todoapp.gateway.upstream // {
          user = "https://db:50061";
          todo = [
            "https://db:50062"
            "https://192.168.1.2:50062"
          ];
          healthIntervalMs = 500;
          serverName = "backend";
          allowedAddresses = [ "192.168.1.2" ];
        };
      };
    };
  };

  # createLocally (the default) with one backend's URL over TCP.
  tcpWithLocal = eval (
    lib.recursiveUpdate allOnOneHost {
      services.todoapp.user.database.url = "mysql://todoapp:pw@127.0.0.1:3306/todoapp_user";
    }
  );
  tcpUser = tcpWithLocal.systemd.services.todoapp-user.serviceConfig;

  remoteByName = eval (
    lib.recursiveUpdate allOnOneHost {
      services.todoapp.user.database.url = "mysql://todoapp@db.internal/todoapp_user";
    }
  );

  bothFamilies = eval (
    lib.recursiveUpdate allOnOneHost {
      services.todoapp = {
        user.allowedClients = [
          "192.168.1.3"
          "fd00::3"
        ];
        gateway.upstream.allowedAddresses = [
          "192.168.1.2"
          "fd00::2"
        ];
        database.createLocally = false;
        database.allowedAddresses = [
          "10.0.0.5"
          "fd00::5"
        ];
        user.database.url = "mysql://todoapp@db.internal/todoapp_user";
        todo.database.url = "mysql://todoapp@[fd00::6]:3306/todoapp_todo";
      };
    }
  );

  withMetrics = eval (
    lib.recursiveUpdate allOnOneHost {
      services.todoapp = {
        gateway.metrics = {
          enable = true;
          listenAddress = "::";
          openFirewall = true;
        };
        todo.metrics = {
          enable = true;
          port = 9500;
        };
      };
    }
  );
  metricsSock = name: withMetrics.systemd.sockets."todoapp-${name}-metrics";

  cross = evalWith (lib.recursiveUpdate pkgs {
    stdenv.buildPlatform.canExecute = _: false;
  }) allOnOneHost;

  checks = {
    "no failed assertions (one host)" = failedAssertions single == [ ];
    "gateway socket on [::]:50051" = (sock "gateway").socketConfig.ListenStream == [ "[::]:50051" ];
    "gateway socket open to everyone" = !((sock "gateway").socketConfig ? IPAddressDeny);
    "backend socket loopback only" = (sock "user").socketConfig.IPAddressAllow == [ "localhost" ];
    "sockets wanted by sockets.target" = (sock "todo").wantedBy == [ "sockets.target" ];
    "socket fd names" =
      map (n: (sock n).socketConfig.FileDescriptorName) [
        "gateway"
        "user"
        "todo"
      ] == [
        "gateway"
        "user"
        "todo"
      ];
    "Type=notify" = (svc "user").serviceConfig.Type == "notify";
    "services require their socket" = (svc "todo").unitConfig.Requires == [ "todoapp-todo.socket" ];
    "backends after mysql, without Requires" =
      (svc "user").unitConfig.After == [
        "todoapp-user.socket"
        "mysql.service"
      ];
    "backends without network" = (svc "todo").serviceConfig.PrivateNetwork;
    "gateway has network" = !((svc "gateway").serviceConfig ? PrivateNetwork);
    "ExecStart" =
      (svc "user").serviceConfig.ExecStart
      == "/nix/store/00000000000000000000000000000000-todoapp/bin/todoapp-user --config /nix/store/00000000000000000000000000000000-todoapp-user-checked.toml serve";
    "gateway credentials" =
      (svc "gateway").serviceConfig.LoadCredential == [
        "client.crt:${keys}/gateway-client.crt"
        "client.key:${keys}/gateway-client.key"
        "jwt-0.pub:${keys}/jwt.pub"
        "jwt-1.pub:${keys}/jwt-old.pub"
        "tls.crt:${keys}/gateway.crt"
        "tls.key:${keys}/gateway.key"
        "upstream-ca.crt:${keys}/internal-ca.crt"
      ];
    "gateway settings" =
      single.services.todoapp.gateway.settings == {
        listen = "[::]:50051";
        log_level = "info";
        max_message_bytes = 131072;
        tls = {
          cert = "tls.crt";
          key = "tls.key";
        };
        upstream = {
          user = "https://127.0.0.1:50061";
          todo = "https://127.0.0.1:50062";
          ca = "upstream-ca.crt";
          client_cert = "client.crt";
          client_key = "client.key";
        };
        jwt.public_keys = [
          "jwt-0.pub"
          "jwt-1.pub"
        ];
      };
    "user settings" =
      single.services.todoapp.user.settings == {
        listen = "127.0.0.1:50061";
        log_level = "info";
        tls = {
          cert = "tls.crt";
          key = "tls.key";
          client_ca = "client-ca.crt";
        };
        database.url = "mysql://todoapp-user@localhost/todoapp_user?socket=/run/mysqld/mysqld.sock";
        jwt.private_key = "jwt.key";
      };
    "system users" =
      builtins.attrNames single.users.users == [
        "todoapp-gateway"
        "todoapp-todo"
        "todoapp-user"
      ];
    "firewall" = single.networking.firewall.allowedTCPPorts == [ 50051 ];
    "local MariaDB" =
      single.services.mysql.enable
      &&
        single.services.mysql.ensureDatabases == [
          "todoapp_user"
          "todoapp_todo"
        ];
    "MariaDB unix_socket users" =
      single.services.mysql.ensureUsers == [
        {
          name = "todoapp-user";
          ensurePermissions."todoapp_user.*" = "ALL PRIVILEGES";
        }
        {
          name = "todoapp-todo";
          ensurePermissions."todoapp_todo.*" = "ALL PRIVILEGES";
        }
      ];
    "remote db: no failed assertions" =
      failedAssertions remoteDb == [
        "services.todoapp.todo.database.url must be set when services.todoapp.database.createLocally is false."
      ];
    "remote db: password credential" =
      builtins.elem "db-password:${keys}/db-password" remoteDb.systemd.services.todoapp-user.serviceConfig.LoadCredential;
    "remote db: network allowed" =
      remoteDb.systemd.services.todoapp-user.serviceConfig.IPAddressAllow == [
        "localhost"
        "10.0.0.5"
      ];
    "remote db: no mysql" = remoteDb.services.mysql == { };
    "remote db: password_file" =
      remoteDb.services.todoapp.user.settings.database.password_file == "db-password";
    "key in store rejected" =
      failedAssertions keyInStore == [
        "services.todoapp.user: the file for credential tls.key (/nix/store/00000000000000000000000000000000-user.key) must be an absolute path outside the Nix store."
      ];
    "limits: only the set ones written" =
      limits.services.todoapp.gateway.settings.fair_share == {
        reads_per_sec = 10;
        max_in_flight_per_user = 4;
      }
      && limits.services.todoapp.todo.settings.quota == { max_entries = 500; }
      && !(single.services.todoapp.todo.settings ? quota);
    "gateway only: no mysql, no backend units" =
      gatewayOnly.services.mysql == { }
      && builtins.attrNames gatewayOnly.systemd.services == [ "todoapp-gateway" ];
    "gateway only: upstream" =
      gatewayOnly.services.todoapp.gateway.settings.upstream.server_name == "backend"
      && gatewayOnly.services.todoapp.gateway.settings.upstream.user == "https://db:50061"
      &&
        gatewayOnly.services.todoapp.gateway.settings.upstream.todo == [
          "https://db:50062"
          "https://192.168.1.2:50062"
        ]
      && gatewayOnly.services.todoapp.gateway.settings.upstream.health_interval_ms == 500
      && !(gatewayOnly.services.todoapp.gateway.settings.upstream ? eject_after_failures)
      && !(single.services.todoapp.gateway.settings.upstream ? health_interval_ms)
      && gatewayOnly.systemd.services.todoapp-gateway.serviceConfig.IPAddressAllow == [ "192.168.1.2" ];
    "createLocally + TCP: no failed assertions" = failedAssertions tcpWithLocal == [ ];
    "createLocally + TCP: network for the TCP backend" =
      !(tcpUser ? PrivateNetwork)
      && tcpUser.RestrictAddressFamilies == "AF_UNIX AF_INET AF_INET6"
      && tcpUser.IPAddressAllow == [ "localhost" ];
    "createLocally + TCP: ordered after the local MariaDB on 127.0.0.1" =
      tcpWithLocal.systemd.services.todoapp-user.unitConfig.After == [
        "todoapp-user.socket"
        "mysql.service"
      ];
    "createLocally + TCP: local database only for the other backend" =
      tcpWithLocal.services.mysql.ensureDatabases == [ "todoapp_todo" ]
      && tcpWithLocal.systemd.services.todoapp-todo.serviceConfig.PrivateNetwork;
    "createLocally + TCP: the URL is the one configured" =
      tcpWithLocal.services.todoapp.user.settings.database.url
      == "mysql://todoapp:pw@127.0.0.1:3306/todoapp_user";
    "remote database by name needs allowedAddresses" =
      failedAssertions remoteByName == [
        "services.todoapp.user.database.url connects to db.internal over TCP, but services.todoapp.database.allowedAddresses is empty: the service may reach only the addresses listed there (IPAddressAllow= takes addresses, not names), so list the database host's IPv4 and IPv6 addresses."
      ];
    "both families: no failed assertions" = failedAssertions bothFamilies == [ ];
    "both families: backend socket clients" =
      bothFamilies.systemd.sockets.todoapp-user.socketConfig.IPAddressAllow == [
        "192.168.1.3"
        "fd00::3"
      ];
    "both families: gateway upstream" =
      bothFamilies.systemd.services.todoapp-gateway.serviceConfig.IPAddressAllow == [
        "192.168.1.2"
        "fd00::2"
      ];
    "both families: database by name" =
      bothFamilies.systemd.services.todoapp-user.serviceConfig.IPAddressAllow == [
        "localhost"
        "10.0.0.5"
        "fd00::5"
      ];
    "both families: database by IPv6 address" =
      bothFamilies.systemd.services.todoapp-todo.serviceConfig.IPAddressAllow == [
        "localhost"
        "10.0.0.5"
        "fd00::5"
        "fd00::6"
      ];
    "metrics off by default: no socket, no setting" =
      !(single.systemd.sockets ? "todoapp-gateway-metrics")
      && !(single.services.todoapp.gateway.settings ? metrics)
      && !((svc "user").serviceConfig ? Sockets);
    "metrics: gateway socket on [::]:9461, named for the service" =
      (metricsSock "gateway").socketConfig.ListenStream == [ "[::]:9461" ]
      && (metricsSock "gateway").socketConfig.FileDescriptorName == "gateway-metrics"
      && (metricsSock "gateway").socketConfig.Service == "todoapp-gateway.service"
      && (metricsSock "gateway").wantedBy == [ "sockets.target" ];
    "metrics: the service gets both sockets" =
      withMetrics.systemd.services.todoapp-todo.serviceConfig.Sockets == [
        "todoapp-todo.socket"
        "todoapp-todo-metrics.socket"
      ];
    "metrics: listen setting follows the options" =
      withMetrics.services.todoapp.gateway.settings.metrics.listen == "[::]:9461"
      && withMetrics.services.todoapp.todo.settings.metrics.listen == "127.0.0.1:9500";
    "metrics: only enabled services get a socket" =
      !(withMetrics.systemd.sockets ? "todoapp-user-metrics");
    "metrics: backend without network access still serves them (socket passed)" =
      withMetrics.systemd.services.todoapp-todo.serviceConfig.PrivateNetwork;
    "metrics: firewall opens only the metrics port asked for" =
      withMetrics.networking.firewall.allowedTCPPorts == [
        50051
        9461
      ];
    "cross build: config not checked by running the target's binary" =
      (cross.systemd.services.todoapp-user).serviceConfig.ExecStart
      == "/nix/store/00000000000000000000000000000000-todoapp/bin/todoapp-user --config /nix/store/00000000000000000000000000000000-todoapp-user.toml serve";
  };
  failed = builtins.attrNames (lib.filterAttrs (_: ok: !ok) checks);
in
if failed == [ ] then
  "module-eval: ${toString (builtins.length (builtins.attrNames checks))} checks passed"
else
  throw "module-eval: failed: ${lib.concatStringsSep "; " failed}"
