# Packages of the flake: the Rust workspace, one package per binary, the
# launcher wrapped with MariaDB, and OCI images.
{
  pkgs,
  # The git revision built (the flake passes self.rev), shown in the
  # services' todoapp_build_info metric; null: "unknown".
  revision ? null,
}:
let
  inherit (pkgs) lib;
  version = (lib.importTOML ../Cargo.toml).workspace.package.version;

  # The Rust workspace and its .proto files; not nixos-modules/, vm-tests/,
  # deploy/ or documentation, so changing those does not rebuild anything.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      (lib.fileset.difference ../services (lib.fileset.fileFilter (f: f.hasExt "md") ../services))
      (lib.fileset.fileFilter (f: f.hasExt "proto") ../protos)
      (lib.fileset.maybeMissing ../.cargo)
      (lib.fileset.maybeMissing ../.sqlx)
    ];
  };

  meta = {
    description = "todoapp: gRPC todo backend (gateway, user and todo services)";
    license = with lib.licenses; [
      mit
      asl20
    ];
    platforms = lib.platforms.linux;
  };

  todoapp = pkgs.rustPlatform.buildRustPackage {
    pname = "todoapp";
    inherit version src;
    cargoLock.lockFile = ../Cargo.lock;
    # aws-lc-sys builds its C code with the cc crate; cmake is its fallback.
    nativeBuildInputs = [ pkgs.cmake ];
    dontUseCmakeConfigure = true;
    env = {
      SQLX_OFFLINE = "true";
    }
    // lib.optionalAttrs (revision != null) { TODOAPP_GIT_REVISION = revision; };
    # The tests need MariaDB; the flake's VM tests cover behaviour.
    doCheck = false;
    meta = meta // {
      mainProgram = "todoapp-stack";
    };
  };

  # Just one binary (and so a small closure, e.g. for an image).
  single =
    name:
    pkgs.runCommand "${name}-${version}"
      {
        meta = meta // {
          mainProgram = name;
        };
      }
      ''
        install -D -m 0755 ${todoapp}/bin/${name} $out/bin/${name}
      '';

  # `nix run`: the local stack, with MariaDB for `--database mariadb`.
  stack =
    pkgs.runCommand "todoapp-stack-${version}"
      {
        nativeBuildInputs = [ pkgs.makeWrapper ];
        meta = meta // {
          mainProgram = "todoapp-stack";
        };
      }
      ''
        makeWrapper ${todoapp}/bin/todoapp-stack $out/bin/todoapp-stack \
          --prefix PATH : ${lib.makeBinPath [ pkgs.mariadb ]}
      '';

  # The command-line client with its shell completions and man page, both
  # generated at build time by the binary itself.
  todoctl =
    pkgs.runCommand "todoctl-${version}"
      {
        nativeBuildInputs = [ pkgs.installShellFiles ];
        meta = meta // {
          description = "todoctl: command-line client for todoapp";
          mainProgram = "todoctl";
        };
      }
      (
        ''
          install -D -m 0755 ${todoapp}/bin/todoctl $out/bin/todoctl
        ''
        + lib.optionalString (pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform) ''
          $out/bin/todoctl man > todoctl.1
          installManPage todoctl.1
          installShellCompletion --cmd todoctl \
            --bash <($out/bin/todoctl completions bash) \
            --fish <($out/bin/todoctl completions fish) \
            --zsh <($out/bin/todoctl completions zsh)
        ''
      );

  binaries = lib.genAttrs [ "todoapp-gateway" "todoapp-user" "todoapp-todo" "todoapp-e2e" ] single;

  # OCI image of one service: the binary, CA certificates, nothing else.
  # Runs as nobody, listens on 0.0.0.0 (no socket activation in a
  # container). Keys and certificates are mounted into /run/secrets/todoapp
  # under the credential names the config uses (tls.crt, tls.key, ...);
  # anything else is set with TODOAPP_<SERVICE>_<KEY> variables.
  image =
    name: port:
    pkgs.dockerTools.streamLayeredImage {
      name = "todoapp-${name}";
      tag = version;
      contents = [ pkgs.cacert ];
      fakeRootCommands = ''
        mkdir -p tmp var/lib/todoapp run/secrets/todoapp etc/todoapp
        chmod 1777 tmp
        chown 65534:65534 var/lib/todoapp
        cp ${../deploy/systemd + "/${name}.toml"} etc/todoapp/${name}.toml
      '';
      config = {
        Entrypoint = [
          "${binaries."todoapp-${name}"}/bin/todoapp-${name}"
          "--config"
          "/etc/todoapp/${name}.toml"
        ];
        Cmd = [ "serve" ];
        User = "65534:65534";
        WorkingDir = "/var/lib/todoapp";
        ExposedPorts."${toString port}/tcp" = { };
        Env = [
          "TODOAPP_${lib.toUpper name}_LISTEN=0.0.0.0:${toString port}"
          "CREDENTIALS_DIRECTORY=/run/secrets/todoapp"
          "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt"
        ];
        Labels."org.opencontainers.image.title" = "todoapp-${name}";
      };
    };

  # Fails if a compiler or the vendored crates ended up in an image.
  imageClosureCheck =
    pkgs.runCommand "todoapp-image-closure"
      {
        closure = pkgs.closureInfo { rootPaths = lib.attrValues binaries; };
      }
      ''
        if grep -E -- '-(rustc|cargo|clang|gcc)-[0-9][^/]*$|vendor' $closure/store-paths | grep -v -- '-lib$'; then
          echo "build tools in the runtime closure (above)" >&2
          exit 1
        fi
        touch $out
      '';

  # For every user of the flake, with whatever clippy the pinned nixpkgs
  # has: only the correctness and suspicious groups fail the check, so a
  # lint added to a newer clippy cannot break `nix flake check`. CI keeps
  # `-D warnings` with its own toolchain (scripts/test-all.sh).
  clippy = todoapp.overrideAttrs (old: {
    pname = "todoapp-clippy";
    nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
    buildPhase = ''
      runHook preBuild
      cargo clippy --offline --workspace --all-targets -- -D clippy::correctness -D clippy::suspicious
      runHook postBuild
    '';
    installPhase = "touch $out";
  });
in
binaries
// {
  inherit todoapp;
  default = todoapp;
  todoapp-stack = stack;
  inherit todoctl;
  oci-gateway = image "gateway" 50051;
  oci-user = image "user" 50061;
  oci-todo = image "todo" 50062;
  checks = { inherit clippy imageClosureCheck; };
}
