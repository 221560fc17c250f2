# Evaluates flake.nix's outputs against nixpkgs' lib and a stub package set
# (no nixpkgs, nothing built): checks the output structure, the package
# wiring, the OCI image settings and the module's default package. Used by
# scripts/check-nix.sh when NIXPKGS_LIB points to a nixpkgs lib/ directory.
{ lib }:
let
  drv =
    name: attrs:
    {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
      meta = attrs.meta or { };
    }
    // attrs;

  stubPkgs =
    system:
    rec {
      inherit lib;
      stdenv.hostPlatform = { inherit system; };
      stdenv.buildPlatform.canExecute = _: true;
      installShellFiles = drv "install-shell-files" { };
      rustPlatform.buildRustPackage =
        args:
        drv "${args.pname}-${args.version}" (
          args
          // {
            overrideAttrs = f: drv "overridden" (args // f args);
          }
        );
      runCommand =
        name: env: script:
        drv name (env // { inherit script; });
      writeShellScript = name: _: drv name { };
      closureInfo = args: drv "closure-info" args;
      dockerTools.streamLayeredImage = args: drv "stream-${args.name}" args;
      testers.runNixOSTest = t: drv t.name { test = t; };
      mkShell = args: drv "shell" args;
      cacert = drv "cacert" { };
      cmake = drv "cmake" { };
      makeWrapper = drv "make-wrapper" { };
      mariadb = drv "mariadb" { };
      clippy = drv "clippy" { };
      openssl = drv "openssl" { };
      runtimeShell = "/bin/sh";
      formats.toml = _: {
        type = lib.types.attrsOf lib.types.anything;
        generate = name: _: drv name { };
      };
    }
    // lib.genAttrs [
      "cargo"
      "rustc"
      "rustfmt"
      "rust-analyzer"
      "grpcurl"
      "nixfmt"
      "nixfmt-tree"
      "deadnix"
      "iproute2"
    ] (n: drv n { });

  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs systems stubPkgs;
  };
  flake = import ../flake.nix;
  self = flake.outputs { inherit self nixpkgs; };

  p = self.packages.x86_64-linux;
  image = p.oci-user;
  names = a: builtins.attrNames a;

  # The module's default package, through the flake's wrapper module; the
  # NixOS options the module sets are declared loosely.
  moduleDefaultOn =
    system:
    lib.evalModules {
      modules = [
        self.nixosModules.default
        {
          options = with lib; {
            assertions = mkOption {
              type = types.listOf types.attrs;
              default = [ ];
            };
            users = mkOption {
              type = types.anything;
              default = { };
            };
            networking = mkOption {
              type = types.anything;
              default = { };
            };
            systemd = mkOption {
              type = types.anything;
              default = { };
            };
            services.mysql = mkOption {
              type = types.anything;
              default = { };
            };
          };
        }
      ];
      specialArgs.pkgs = stubPkgs system;
    };
  moduleDefault = moduleDefaultOn "aarch64-linux";
  unsupported = builtins.tryEval (moduleDefaultOn "riscv64-linux")
    .config.services.todoapp.package.name;

  checks = {
    "flake inputs" = builtins.attrNames flake.inputs == [ "nixpkgs" ];
    "systems" =
      names self.packages == [
        "aarch64-linux"
        "x86_64-linux"
      ]
      && names self.checks == names self.packages;
    "packages" =
      names p == [
        "default"
        "oci-gateway"
        "oci-todo"
        "oci-user"
        "todoapp"
        "todoapp-e2e"
        "todoapp-gateway"
        "todoapp-stack"
        "todoapp-todo"
        "todoapp-user"
        "todoctl"
      ];
    "default is the workspace" = p.default.name == "todoapp-0.1.0";
    "cargoLock" = baseNameOf (toString p.default.cargoLock.lockFile) == "Cargo.lock";
    "no tests in the build" = p.default.doCheck == false;
    "source: protos, no nixos-modules/vm-tests/deploy" =
      let
        src = builtins.readDir p.default.src;
      in
      src ? protos
      && src ? services
      && !(src ? nixos-modules)
      && !(src ? vm-tests)
      && !(src ? deploy)
      && (builtins.readDir "${p.default.src}/protos") ? "user.proto";
    "apps.default" =
      self.apps.x86_64-linux.default.program
      == "/nix/store/00000000000000000000000000000000-todoapp-stack-0.1.0/bin/todoapp-stack";
    "nix run .#todoapp runs the wrapped stack" =
      self.apps.x86_64-linux.todoapp.program == self.apps.x86_64-linux.default.program;
    "nix run .#todoctl" =
      self.apps.x86_64-linux.todoctl.program
      == "/nix/store/00000000000000000000000000000000-todoctl-0.1.0/bin/todoctl";
    "todoctl: binary, man page and completions installed" =
      let
        script = p.todoctl.script;
      in
      lib.hasInfix "00000000000000000000000000000000-todoapp-0.1.0/bin/todoctl" script
      && lib.hasInfix "installManPage todoctl.1" script
      && lib.hasInfix "--bash <($out/bin/todoctl completions bash)" script
      && lib.hasInfix "--zsh <($out/bin/todoctl completions zsh)" script
      && lib.hasInfix "--fish <($out/bin/todoctl completions fish)" script;
    "stack wrapped with MariaDB" =
      lib.hasInfix "00000000000000000000000000000000-mariadb/bin" p.todoapp-stack.script;
    "image: non-root, port, entrypoint" =
      image.config.User == "65534:65534"
      && image.config.ExposedPorts == { "50061/tcp" = { }; }
      &&
        builtins.head image.config.Entrypoint
        == "/nix/store/00000000000000000000000000000000-todoapp-user-0.1.0/bin/todoapp-user";
    "image: only CA certificates besides the binary" = map (c: c.name) image.contents == [ "cacert" ];
    "image: listens on all addresses" =
      builtins.elem "TODOAPP_USER_LISTEN=0.0.0.0:50061" image.config.Env;
    "checks" =
      names self.checks.x86_64-linux == [
        "clippy"
        "default"
        "imageClosureCheck"
        "oci-gateway"
        "oci-todo"
        "oci-user"
        "todoapp-stack"
        "todoctl"
        "vm-cluster"
        "vm-multi-node"
        "vm-single-node"
      ];
    "VM test names" = self.checks.x86_64-linux.vm-multi-node.test.name == "todoapp-multi-node";
    "VM multi-node machines" =
      names self.checks.x86_64-linux.vm-multi-node.test.nodes == [
        "client"
        "db"
        "gateway"
      ];
    "VM cluster machines" =
      names self.checks.x86_64-linux.vm-cluster.test.nodes == [
        "client"
        "node1"
        "node2"
        "node3"
      ];
    "clippy denies correctness and suspicious lints only" =
      let
        phase = self.checks.x86_64-linux.clippy.buildPhase;
      in
      lib.hasInfix "-D clippy::correctness -D clippy::suspicious" phase
      && !lib.hasInfix "-D warnings" phase;
    "nixosModules" =
      names self.nixosModules == [
        "default"
        "todoapp"
      ];
    "module default package" = moduleDefault.config.services.todoapp.package.name == "todoapp-0.1.0";
    "unsupported system: the module throws (a clear error, not a missing attribute)" =
      !unsupported.success;
    "formatter: nixfmt-tree" = self.formatter.x86_64-linux.name == "nixfmt-tree";
    "dev shell" = builtins.length self.devShells.aarch64-linux.default.packages >= 8;
  };
  failed = builtins.attrNames (lib.filterAttrs (_: ok: !ok) checks);
in
if failed == [ ] then
  "flake-eval: ${toString (builtins.length (builtins.attrNames checks))} checks passed"
else
  throw "flake-eval: failed: ${lib.concatStringsSep "; " failed}"
