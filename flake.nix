{
  description = "todoapp: gRPC todo backend (gateway, user and todo services)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixpkgs-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      built = forAllSystems (
        pkgs:
        import ./nixos-modules/packages.nix {
          inherit pkgs;
          revision = self.rev or self.dirtyRev or null;
        }
      );
    in
    {
      packages = lib.mapAttrs (_: p: removeAttrs p [ "checks" ]) built;

      # `nix run`, `nix run .#todoapp`: the stack wrapped with MariaDB (the
      # workspace package alone has no MariaDB for `--database mariadb`).
      apps = forAllSystems (
        pkgs:
        let
          stack = {
            type = "app";
            program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.todoapp-stack;
            meta.description = "Run the whole stack locally (todoapp-stack, MariaDB on PATH)";
          };
        in
        {
          default = stack;
          todoapp = stack;
          # `nix run .#todoctl -- ls`: the command-line client.
          todoctl = {
            type = "app";
            program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.todoctl;
            meta.description = "todoapp's command-line client";
          };
        }
      );

      nixosModules = {
        todoapp =
          { lib, pkgs, ... }:
          let
            system = pkgs.stdenv.hostPlatform.system;
          in
          {
            imports = [ ./nixos-modules/todoapp.nix ];
            services.todoapp.package = lib.mkDefault (
              self.packages.${system}.default
                or (throw "todoapp: the flake builds for ${lib.concatStringsSep " and " systems} only, not ${system}; set services.todoapp.package yourself")
            );
          };
        default = self.nixosModules.todoapp;
      };

      checks = forAllSystems (
        pkgs:
        let
          system = pkgs.stdenv.hostPlatform.system;
          args = {
            inherit pkgs;
            module = self.nixosModules.todoapp;
            package = self.packages.${system}.default;
          };
        in
        {
          inherit (self.packages.${system})
            default
            todoapp-stack
            todoctl
            oci-gateway
            oci-user
            oci-todo
            ;
          inherit (built.${system}.checks) clippy imageClosureCheck;
          vm-single-node = import ./vm-tests/single-node.nix args;
          vm-multi-node = import ./vm-tests/multi-node.nix args;
          vm-cluster = import ./vm-tests/cluster.nix args;
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            rust-analyzer
            cmake
            mariadb
            grpcurl
            openssl
            nixfmt
            deadnix
          ];
        };
      });

      # nixfmt over the whole tree: `nix fmt` needs no file arguments (Nix
      # 2.25 and later pass none). CI formats with the same nixfmt rules
      # (scripts/check-nix.sh).
      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
