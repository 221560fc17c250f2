# NixOS module: services.todoapp (gateway, user and todo services).
#
# The systemd units come from ./units.nix, shared with the plain unit files
# in deploy/systemd/. Keys and certificates are handed to the services with
# LoadCredential= and never enter the Nix store.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    mkDefault
    types
    literalExpression
    ;

  cfg = config.services.todoapp;
  units = import ./units.nix;
  network = import ./network.nix;
  settingsFormat = pkgs.formats.toml { };
  names = [
    "gateway"
    "user"
    "todo"
  ];
  backends = [
    "user"
    "todo"
  ];
  enabled = builtins.filter (n: cfg.${n}.enable) names;
  enabledBackends = builtins.filter (n: cfg.${n}.enable) backends;

  hostPort =
    address: port:
    if lib.hasInfix ":" address then "[${address}]:${toString port}" else "${address}:${toString port}";

  metricsPorts = {
    gateway = 9461;
    user = 9462;
    todo = 9463;
  };
  metricsListen =
    name:
    if cfg.${name}.metrics.enable then with cfg.${name}.metrics; hostPort listenAddress port else null;

  dbName = name: "todoapp_${name}";
  localDbUrl =
    name: "mysql://todoapp-${name}@localhost/${dbName name}?socket=/run/mysqld/mysqld.sock";

  fileOption =
    description:
    mkOption {
      type = types.str;
      example = "/run/keys/todoapp/tls.key";
      description = ''
        ${description}
        Absolute path on the host, read by systemd when the service starts
        (`LoadCredential=`); it is never copied into the Nix store.
      '';
    };

  # Options every service has.
  commonOptions = name: defaultPort: {
    enable = mkEnableOption "the todoapp ${name} service";

    listenAddress = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = "Address the ${name} socket listens on (systemd socket activation).";
    };

    port = mkOption {
      type = types.port;
      default = defaultPort;
      description = "TCP port the ${name} socket listens on.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to open {option}`port` in the firewall.";
    };

    allowedClients = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = if name == "gateway" then null else [ "localhost" ];
      defaultText = literalExpression (if name == "gateway" then "null" else ''[ "localhost" ]'');
      example = [
        "192.168.1.3"
        "10.0.0.0/24"
      ];
      description = ''
        Addresses allowed to connect (`IPAddressAllow=` on the socket, all
        others are denied); `null` allows everyone. List clients by IPv4 and
        IPv6 address (or prefix): a client that has both may connect over
        either. `localhost` means 127.0.0.0/8 and ::1.
      '';
    };

    metrics = {
      enable = mkEnableOption "the Prometheus metrics listener of the ${name} service (`GET /metrics`)";

      listenAddress = mkOption {
        type = types.str;
        default = "127.0.0.1";
        example = "0.0.0.0";
        description = "Address the ${name} metrics socket listens on (a second socket unit).";
      };

      port = mkOption {
        type = types.port;
        default = metricsPorts.${name};
        description = "TCP port the ${name} metrics socket listens on.";
      };

      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Whether to open {option}`metrics.port` in the firewall.";
      };
    };

    logLevel = mkOption {
      type = types.str;
      default = "info";
      example = "info,todoapp=debug";
      description = "Log filter (`log_level`); logs go to the journal.";
    };

    tls = {
      certFile = fileOption "TLS certificate (PEM) the ${name} service presents.";
      keyFile = fileOption "Private key (PEM) of {option}`tls.certFile`.";
    };

    settings = mkOption {
      type = types.submodule { freeformType = settingsFormat.type; };
      default = { };
      example = {
        max_message_bytes = 131072;
        shutdown_timeout_secs = 20;
      };
      description = ''
        Configuration of the ${name} service, written to a TOML file (see
        `deploy/systemd/${name}.toml` for the keys). Listening address,
        TLS and key paths are set from the other options.
      '';
    };
  };

  databaseOptions = name: {
    url = mkOption {
      type = types.nullOr types.str;
      default = null;
      defaultText = lib.literalMD "`${localDbUrl name}` with `database.createLocally`";
      example = "mysql://todoapp@db.internal:3306/${dbName name}";
      description = ''
        Database URL. Required when {option}`services.todoapp.database.createLocally`
        is false; when set, it is used instead of the local database. A
        `?socket=PATH` URL (or SQLite) keeps the service without network
        access; over TCP, see {option}`services.todoapp.database.allowedAddresses`.
      '';
    };
    passwordFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/keys/todoapp/db-password";
      description = ''
        File with the database password, passed as credential `db-password`
        (never copied into the Nix store). Not needed with the local database,
        which authenticates the system user through its unix socket.
      '';
    };
  };

  backendOptions =
    name: defaultPort:
    commonOptions name defaultPort
    // {
      tls = (commonOptions name defaultPort).tls // {
        clientCaFile = fileOption "CA certificate (PEM) that client certificates must chain to (the internal CA of the gateway's client certificate).";
      };
      database = databaseOptions name;
    };

  # Credential name -> file, per service; the config refers to the names.
  credentials = {
    gateway = {
      "tls.crt" = cfg.gateway.tls.certFile;
      "tls.key" = cfg.gateway.tls.keyFile;
      "upstream-ca.crt" = cfg.gateway.upstream.caFile;
      "client.crt" = cfg.gateway.upstream.clientCertFile;
      "client.key" = cfg.gateway.upstream.clientKeyFile;
    }
    // lib.listToAttrs (
      lib.imap0 (i: f: lib.nameValuePair "jwt-${toString i}.pub" f) cfg.gateway.jwt.publicKeyFiles
    );
    user = backendCredentials "user" // {
      "jwt.key" = cfg.user.jwt.privateKeyFile;
    };
    todo = backendCredentials "todo";
  };
  backendCredentials =
    name:
    {
      "tls.crt" = cfg.${name}.tls.certFile;
      "tls.key" = cfg.${name}.tls.keyFile;
      "client-ca.crt" = cfg.${name}.tls.clientCaFile;
    }
    // lib.optionalAttrs (cfg.${name}.database.passwordFile != null) {
      "db-password" = cfg.${name}.database.passwordFile;
    };

  # Generated config, checked at build time without reading any key file,
  # when the build machine can run the target's binary (not when cross
  # compiling).
  configFile =
    name:
    let
      file = settingsFormat.generate "todoapp-${name}.toml" cfg.${name}.settings;
      canRun = pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;
    in
    if cfg.validateConfig && canRun then
      pkgs.runCommand "todoapp-${name}-checked.toml" { } ''
        ${cfg.package}/bin/todoapp-${name} --config ${file} --check-config --no-files
        ln -s ${file} $out
      ''
    else
      file;

  # A backend uses the local MariaDB (createLocally) unless its own
  # database.url says otherwise.
  usesLocalDb = name: cfg.database.createLocally && cfg.${name}.database.url == null;
  localDbBackends = builtins.filter usesLocalDb enabledBackends;
  dbUrl =
    name: if cfg.${name}.database.url != null then cfg.${name}.database.url else localDbUrl name;

  # The sandbox follows the URL the backend really uses: the local MariaDB
  # is reached through its unix socket, so such a backend runs without
  # network access (the listening socket comes from systemd); a TCP URL
  # gets the network, limited to the database's address.
  backendNetwork =
    name:
    network.backendNetwork {
      inherit name;
      url = dbUrl name;
      localDatabase = localDbBackends != [ ];
      inherit (cfg.database) allowedAddresses;
    };

  unitsFor =
    name:
    let
      s = cfg.${name};
      isBackend = name != "gateway";
      net = backendNetwork name;
      afterMysql = isBackend && net.afterMysql;
    in
    units.mkUnits {
      inherit name;
      execStart = "${cfg.package}/bin/todoapp-${name} --config ${configFile name} serve";
      listen = [ (hostPort s.listenAddress s.port) ];
      credentials = credentials.${name};
      clientAllow = s.allowedClients;
      networkAllow = if isBackend then net.networkAllow else s.upstream.allowedAddresses;
      privateNetwork = isBackend && net.privateNetwork;
      after = lib.optional afterMysql "mysql.service";
      wants = lib.optional afterMysql "mysql.service";
      metricsListen = metricsListen name;
    };

  systemdFor =
    name:
    let
      u = unitsFor name;
    in
    {
      sockets."todoapp-${name}" = {
        inherit (u.socket) wantedBy;
        unitConfig = u.socket.unit;
        socketConfig = u.socket.socket;
      };
      services."todoapp-${name}" = {
        unitConfig = u.service.unit;
        serviceConfig = u.service.service;
      };
    }
    // lib.optionalAttrs (u.metricsSocket != null) {
      sockets."todoapp-${name}-metrics" = {
        inherit (u.metricsSocket) wantedBy;
        unitConfig = u.metricsSocket.unit;
        socketConfig = u.metricsSocket.socket;
      };
    };

  commonSettings =
    name:
    {
      listen = mkDefault (hostPort cfg.${name}.listenAddress cfg.${name}.port);
      log_level = mkDefault cfg.${name}.logLevel;
    }
    // lib.optionalAttrs cfg.${name}.metrics.enable {
      metrics.listen = metricsListen name;
    }
    // {
      tls = {
        cert = "tls.crt";
        key = "tls.key";
      };
    };
  backendSettings =
    name:
    commonSettings name
    // {
      tls = {
        cert = "tls.crt";
        key = "tls.key";
        client_ca = "client-ca.crt";
      };
      database = {
        url = dbUrl name;
      }
      // lib.optionalAttrs (cfg.${name}.database.passwordFile != null) { password_file = "db-password"; };
    };

  # Operator knobs left unset (null) keep the service's own default.
  positiveOrDefault =
    serviceDefault: description:
    mkOption {
      type = types.nullOr types.ints.positive;
      default = null;
      example = serviceDefault;
      description = "${description} `null` keeps the service's default (${toString serviceDefault}).";
    };
  setOnly = lib.filterAttrs (_: v: v != null);
  # One backend URL, or the URLs of several instances.
  upstreamEndpoints = types.either types.str (types.nonEmptyListOf types.str);

  credentialAssertions =
    name:
    lib.mapAttrsToList (cred: file: {
      assertion = lib.hasPrefix "/" file && !lib.hasPrefix "${builtins.storeDir}/" file;
      message = "services.todoapp.${name}: the file for credential ${cred} (${file}) must be an absolute path outside the Nix store.";
    }) credentials.${name};
in
{
  options.services.todoapp = {
    package = mkOption {
      type = types.package;
      description = "The todoapp package (all binaries). The flake's module sets it to the flake's build.";
    };

    validateConfig = mkOption {
      type = types.bool;
      default = true;
      description = "Check the generated configuration at build time (`--check-config --no-files`).";
    };

    database = {
      createLocally = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run MariaDB on this host (`services.mysql`) with databases
          `todoapp_user`/`todoapp_todo` and users `todoapp-user`/`todoapp-todo`
          authenticated through the unix socket, for each enabled backend
          whose `database.url` is not set; such a backend runs without
          network access. Otherwise set `database.url` (and
          `database.passwordFile`) of the backends: the sandbox follows the
          URL (a TCP URL gets network access to the addresses in
          {option}`services.todoapp.database.allowedAddresses` and to an
          address written in the URL itself).
        '';
      };
      allowedAddresses = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "10.0.0.5" ];
        description = ''
          Addresses of a remote database server the backends may connect to
          (`IPAddressAllow=`; loopback is always allowed, and so is an address
          written in a backend's `database.url`). List every IPv4 and IPv6
          address the server's name resolves to. Names are resolved through
          nscd (enabled by default on NixOS): with `IPAddressDeny=` the
          service cannot reach a DNS server itself.
        '';
      };
    };

    gateway = commonOptions "gateway" 50051 // {
      upstream = {
        user = mkOption {
          type = upstreamEndpoints;
          default = "https://127.0.0.1:${toString cfg.user.port}";
          defaultText = literalExpression ''"https://127.0.0.1:''${toString config.services.todoapp.user.port}"'';
          example = [
            "https://10.0.0.2:50061"
            "https://10.0.0.3:50061"
          ];
          description = ''
            URL of the user service, or a list of URLs of its instances: the
            gateway balances over every address listed and every A/AAAA
            record of every name listed (re-resolved periodically).
          '';
        };
        todo = mkOption {
          type = upstreamEndpoints;
          default = "https://127.0.0.1:${toString cfg.todo.port}";
          defaultText = literalExpression ''"https://127.0.0.1:''${toString config.services.todoapp.todo.port}"'';
          example = [
            "https://10.0.0.2:50062"
            "https://10.0.0.3:50062"
          ];
          description = "URL of the todo service, or a list of URLs of its instances (as {option}`upstream.user`).";
        };
        healthIntervalMs = positiveOrDefault 1000 "How often the gateway health-checks every backend endpoint (`upstream.health_interval_ms`).";
        resolveIntervalMs = positiveOrDefault 5000 "How often host names in the upstream URLs are resolved again (`upstream.resolve_interval_ms`).";
        ejectAfterFailures = positiveOrDefault 2 "Calls in a row failing on an endpoint's connection that eject it until it is healthy again (`upstream.eject_after_failures`).";
        serverName = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "backend";
          description = "TLS name expected in the backends' certificates, if not the host in the URLs.";
        };
        caFile = fileOption "CA certificate (PEM) that signed the backends' certificates.";
        clientCertFile = fileOption "Client certificate (PEM) the gateway presents to the backends.";
        clientKeyFile = fileOption "Private key (PEM) of {option}`upstream.clientCertFile`.";
        allowedAddresses = mkOption {
          type = types.listOf types.str;
          default = [ "localhost" ];
          example = [ "10.0.0.2" ];
          description = ''
            Addresses the gateway may connect to (`IPAddressAllow=`): the
            backends. List every IPv4 and IPv6 address their names resolve
            to; IPv6 is usually tried first. Names in the upstream URLs are
            resolved through nscd (enabled by default on NixOS): with
            `IPAddressDeny=` the gateway cannot reach a DNS server itself.
          '';
        };
      };
      fairShare = {
        readsPerSec = positiveOrDefault 50 "GetToDo/ListToDo calls per second and user (`fair_share.reads_per_sec`).";
        readBurst = positiveOrDefault 100 "Reads a user may make at once after a pause (`fair_share.read_burst`).";
        writesPerSec = positiveOrDefault 50 "Create/Update/DeleteToDo calls per second and user (`fair_share.writes_per_sec`).";
        writeBurst = positiveOrDefault 100 "Writes a user may make at once after a pause (`fair_share.write_burst`).";
        maxInFlightPerUser = positiveOrDefault 16 "Calls of one user forwarded at once; more fail fast (`fair_share.max_in_flight_per_user`).";
        maxTrackedUsers = positiveOrDefault 100000 "Users whose rate state is kept at once (`fair_share.max_tracked_users`).";
        refusedReadPauseMs = mkOption {
          type = types.nullOr (types.ints.between 0 1000);
          default = null;
          example = 0;
          description = "After refusing a call for its user's rate or in-flight cap, read nothing more from that connection for the retry delay, at most this many milliseconds; 0 turns pauses off (for a proxy that multiplexes many users over one connection) (`fair_share.refused_read_pause_ms`). `null` keeps the service's default (100).";
        };
      };
      jwt.publicKeyFiles = mkOption {
        type = types.nonEmptyListOf types.str;
        example = [ "/run/keys/todoapp/jwt.pub" ];
        description = ''
          Ed25519 public keys (PEM) that verify access tokens; list the old
          and the new key while rotating. Passed as credentials.
        '';
      };
    };

    user = backendOptions "user" 50061 // {
      jwt.privateKeyFile = fileOption "Ed25519 private key (PKCS#8 PEM) that signs access tokens.";
    };

    todo = backendOptions "todo" 50062 // {
      quota = {
        maxEntries = positiveOrDefault 10000 "Entries one user may keep (`quota.max_entries`).";
        maxBytes = positiveOrDefault 20000000 "Bytes of titles and texts one user may keep (`quota.max_bytes`, at least 8800).";
      };
    };
  };

  config = mkIf (enabled != [ ]) (
    lib.mkMerge [
      {
        assertions =
          lib.concatMap credentialAssertions enabled
          ++ map (name: {
            assertion = cfg.database.createLocally || cfg.${name}.database.url != null;
            message = "services.todoapp.${name}.database.url must be set when services.todoapp.database.createLocally is false.";
          }) enabledBackends
          ++ map (message: {
            assertion = false;
            inherit message;
          }) (lib.concatMap (name: (backendNetwork name).problems) enabledBackends);

        users.users = lib.genAttrs (map (n: "todoapp-${n}") enabled) (user: {
          isSystemUser = true;
          group = user;
          description = "todoapp service user";
        });
        users.groups = lib.genAttrs (map (n: "todoapp-${n}") enabled) (_: { });

        networking.firewall.allowedTCPPorts =
          map (n: cfg.${n}.port) (builtins.filter (n: cfg.${n}.openFirewall) enabled)
          ++ map (n: cfg.${n}.metrics.port) (
            builtins.filter (n: cfg.${n}.metrics.enable && cfg.${n}.metrics.openFirewall) enabled
          );

        systemd = lib.mkMerge (map systemdFor enabled);

        services.todoapp = {
          gateway.settings = mkIf cfg.gateway.enable (
            commonSettings "gateway"
            // {
              upstream = {
                inherit (cfg.gateway.upstream) user todo;
                ca = "upstream-ca.crt";
                client_cert = "client.crt";
                client_key = "client.key";
              }
              // lib.optionalAttrs (cfg.gateway.upstream.serverName != null) {
                server_name = cfg.gateway.upstream.serverName;
              }
              // (
                with cfg.gateway.upstream;
                setOnly {
                  health_interval_ms = healthIntervalMs;
                  resolve_interval_ms = resolveIntervalMs;
                  eject_after_failures = ejectAfterFailures;
                }
              );
              jwt.public_keys = lib.genList (i: "jwt-${toString i}.pub") (
                builtins.length cfg.gateway.jwt.publicKeyFiles
              );
            }
            // lib.optionalAttrs (setOnly cfg.gateway.fairShare != { }) {
              fair_share =
                with cfg.gateway.fairShare;
                setOnly {
                  reads_per_sec = readsPerSec;
                  read_burst = readBurst;
                  writes_per_sec = writesPerSec;
                  write_burst = writeBurst;
                  max_in_flight_per_user = maxInFlightPerUser;
                  max_tracked_users = maxTrackedUsers;
                  refused_read_pause_ms = refusedReadPauseMs;
                };
            }
          );
          user.settings = mkIf cfg.user.enable (backendSettings "user" // { jwt.private_key = "jwt.key"; });
          todo.settings = mkIf cfg.todo.enable (
            backendSettings "todo"
            // lib.optionalAttrs (setOnly cfg.todo.quota != { }) {
              quota = setOnly {
                max_entries = cfg.todo.quota.maxEntries;
                max_bytes = cfg.todo.quota.maxBytes;
              };
            }
          );
        };
      }

      (mkIf (localDbBackends != [ ]) {
        services.mysql = {
          enable = true;
          package = mkDefault pkgs.mariadb;
          ensureDatabases = map dbName localDbBackends;
          ensureUsers = map (name: {
            name = "todoapp-${name}";
            ensurePermissions."${dbName name}.*" = "ALL PRIVILEGES";
          }) localDbBackends;
        };
      })
    ]
  );
}
