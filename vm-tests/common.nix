# Shared by the VM tests: test-only certificates (certs/gen-test-certs.sh),
# copied onto each machine at boot so that the module sees paths outside
# the Nix store, and the matching services.todoapp key options.
{ pkgs }:
rec {
  certs = pkgs.runCommand "todoapp-test-certs" { nativeBuildInputs = [ pkgs.openssl ]; } ''
    ${pkgs.runtimeShell} ${../certs/gen-test-certs.sh} $out
  '';

  dir = "/run/todoapp-test-certs";

  # NixOS module: puts the certificates into `dir`.
  install = {
    systemd.tmpfiles.rules = [ "C ${dir} - - - - ${certs}" ];
  };

  gateway = {
    tls = {
      certFile = "${dir}/gateway.crt";
      keyFile = "${dir}/gateway.key";
    };
    upstream = {
      caFile = "${dir}/internal-ca.crt";
      clientCertFile = "${dir}/gateway-client.crt";
      clientKeyFile = "${dir}/gateway-client.key";
    };
    jwt.publicKeyFiles = [ "${dir}/jwt-ed25519.pub" ];
  };

  backend = name: {
    tls = {
      certFile = "${dir}/${name}.crt";
      keyFile = "${dir}/${name}.key";
      clientCaFile = "${dir}/internal-ca.crt";
    };
  };

  user = backend "user" // {
    jwt.privateKeyFile = "${dir}/jwt-ed25519.key";
    # The tests run todoapp-e2e again and again from one client address;
    # the per-address limits are for the internet (per-account ones stay).
    settings.throttle = {
      address_failures = 100000;
      registrations = 100000;
    };
  };
  todo = backend "todo";

  e2e = gateway: "todoapp-e2e --gateway ${gateway} --ca ${dir}/ca.crt";
}
