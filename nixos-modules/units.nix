# Shared systemd unit definitions for the three todoapp services.
#
# Builtins only (no nixpkgs): the NixOS module (./todoapp.nix) consumes the
# data, and ./render-units.nix turns the same data into the plain unit files
# under deploy/systemd/ for systems without NixOS.
#
# A unit is { unit = { ... }; <kind> = { ... }; wantedBy = [ ... ]; } where
# `unit` is the [Unit] section, <kind> is `socket` or `service`, and values
# are strings, integers, booleans or lists (a list gives repeated keys).
let
  defaultListen = {
    gateway = "127.0.0.1:50051";
    user = "127.0.0.1:50061";
    todo = "127.0.0.1:50062";
  };

  descriptions = {
    gateway = "todoapp gateway (public gRPC API)";
    user = "todoapp user service (accounts, tokens)";
    todo = "todoapp todo service";
  };

  # Sandboxing common to all three services. `systemd-analyze security`
  # rates the result; scripts/check-units.sh enforces the limits.
  hardening = {
    NoNewPrivileges = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    UMask = "0077";
    PrivateTmp = true;
    PrivateDevices = true;
    DevicePolicy = "closed";
    PrivateUsers = true;
    PrivateMounts = true;
    PrivateIPC = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    ProtectHostname = true;
    ProtectClock = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    KeyringMode = "private";
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    RestrictNamespaces = true;
    RemoveIPC = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged @resources"
    ];
    SystemCallErrorNumber = "EPERM";
  };

  isBackend = name: name != "gateway";

  # System calls a service needs beyond `hardening`. The user service runs
  # its argon2 threads at nice 10 (setpriority, in @resources) so that a
  # login burst does not starve every other call; lowering its own priority
  # needs no capability. Later allow entries win over the `~` line.
  extraSystemCalls = {
    user = [ "setpriority" ];
  };

  # Units for one service.
  #
  # name            "gateway", "user" or "todo"
  # execStart       the command line (binary, --config FILE, serve)
  # listen          ListenStream= values
  # user, group     the service account (a static system user)
  # credentials     { credential-name = "/absolute/source/path"; } for
  #                 LoadCredential=; the config refers to the names
  # clientAllow     IPAddressAllow= of the socket (null: anyone may connect)
  # networkAllow    IPAddressAllow= for outbound traffic of the service
  # privateNetwork  run without network (the passed socket and unix sockets
  #                 such as /run/mysqld/mysqld.sock keep working)
  # after, wants    extra ordering/wants, e.g. the database unit; Wants= is
  #                 used (not Requires=) so a database restart does not
  #                 restart the service: it reconnects by itself
  # environment     Environment= entries ("KEY=value")
  # documentation   Documentation= URIs
  mkUnits =
    {
      name,
      execStart,
      listen ? [ defaultListen.${name} ],
      user ? "todoapp-${name}",
      group ? user,
      credentials ? { },
      clientAllow ? if isBackend name then [ "localhost" ] else null,
      networkAllow ? [ "localhost" ],
      privateNetwork ? isBackend name,
      after ? [ ],
      wants ? [ ],
      environment ? [ ],
      documentation ? [ ],
      watchdogSec ? 30,
      restartSec ? 1,
      stopTimeoutSec ? 30,
      # Address of the Prometheus metrics socket; null: no metrics socket.
      metricsListen ? null,
    }:
    let
      unitName = "todoapp-${name}";
      credentialNames = builtins.attrNames credentials;
    in
    {
      socket = {
        unit = {
          Description = "${descriptions.${name}} socket";
          Documentation = documentation;
        };
        socket = {
          ListenStream = listen;
          FileDescriptorName = name;
          NoDelay = true;
        }
        // (
          if clientAllow == null then
            { }
          else
            {
              IPAddressDeny = "any";
              IPAddressAllow = clientAllow;
            }
        );
        wantedBy = [ "sockets.target" ];
      };

      service = {
        unit = {
          Description = descriptions.${name};
          Documentation = documentation;
          Requires = [ "${unitName}.socket" ];
          After = [ "${unitName}.socket" ] ++ after;
          Wants = wants;
          StartLimitIntervalSec = 60;
          StartLimitBurst = 10;
        };
        service =
          hardening
          // {
            SystemCallFilter = hardening.SystemCallFilter ++ extraSystemCalls.${name} or [ ];
            Type = "notify";
            NotifyAccess = "main";
            ExecStart = execStart;
            Restart = "on-failure";
            RestartSec = restartSec;
            WatchdogSec = watchdogSec;
            TimeoutStartSec = 90;
            TimeoutStopSec = stopTimeoutSec;
            # Room for many clients (each service caps connections per
            # address and in total well below this); systemd sets it before
            # exec, so the @resources filter does not get in the way.
            LimitNOFILE = 65536;
            User = user;
            Group = group;
            LoadCredential = map (c: "${c}:${credentials.${c}}") credentialNames;
            Environment = environment;
            IPAddressDeny = "any";
          }
          // (
            if metricsListen == null then
              { }
            else
              {
                Sockets = [
                  "${unitName}.socket"
                  "${unitName}-metrics.socket"
                ];
              }
          )
          // (
            if privateNetwork then
              {
                PrivateNetwork = true;
                # Only unix sockets (database, notify, journal); the passed TCP
                # listener needs no socket() call.
                RestrictAddressFamilies = "AF_UNIX";
              }
            else
              {
                IPAddressAllow = networkAllow;
                RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6";
              }
          )
          // (
            if isBackend name then
              {
                # SQLite databases (the default URL) live here.
                StateDirectory = unitName;
                StateDirectoryMode = "0700";
                WorkingDirectory = "/var/lib/${unitName}";
              }
            else
              { }
          );
        # Installing the service installs its socket; the socket starts it.
        also = [ "${unitName}.socket" ];
      };

      # Metrics come in on a socket of their own, passed to the service
      # with the gRPC one (a backend without network access can still
      # serve them). Scrapers are limited by the firewall, not here.
      metricsSocket =
        if metricsListen == null then
          null
        else
          {
            unit = {
              Description = "${descriptions.${name}} metrics socket";
              Documentation = documentation;
            };
            socket = {
              ListenStream = [ metricsListen ];
              FileDescriptorName = "${name}-metrics";
              Service = "${unitName}.service";
              NoDelay = true;
            };
            wantedBy = [ "sockets.target" ];
          };
    };

  # Credential names used by the configs; see deploy/systemd/*.toml.
  credentialNames = {
    gateway = [
      "tls.crt"
      "tls.key"
      "upstream-ca.crt"
      "client.crt"
      "client.key"
      "jwt.pub"
    ];
    user = [
      "tls.crt"
      "tls.key"
      "client-ca.crt"
      "jwt.key"
    ];
    todo = [
      "tls.crt"
      "tls.key"
      "client-ca.crt"
    ];
  };
in
{
  inherit
    defaultListen
    hardening
    mkUnits
    credentialNames
    ;
  services = [
    "gateway"
    "user"
    "todo"
  ];
}
