# Renders ./units.nix into plain systemd unit files (builtins only).
#
#   nix-instantiate --eval --strict --json nixos-modules/render-units.nix
#
# gives { "<file name>" = "<contents>"; ... }; scripts/check-units.sh writes
# them to deploy/systemd/ (--update) or compares them with the committed copy.
{
  binDir ? "/usr/local/bin",
  configDir ? "/etc/todoapp",
  credentialDir ? "/etc/todoapp/credentials",
  databaseUnit ? "mariadb.service",
}:
let
  inherit (builtins)
    attrNames
    concatMap
    concatStringsSep
    elem
    filter
    isBool
    isList
    listToAttrs
    map
    sort
    ;
  units = import ./units.nix;

  # Keys listed here come first, in this order; the rest follow sorted.
  keyOrder = [
    "Description"
    "Documentation"
    "Requires"
    "Wants"
    "After"
    "StartLimitIntervalSec"
    "StartLimitBurst"
    "ListenStream"
    "FileDescriptorName"
    "Type"
    "NotifyAccess"
    "ExecStart"
    "User"
    "Group"
    "Restart"
    "RestartSec"
    "WatchdogSec"
    "TimeoutStartSec"
    "TimeoutStopSec"
    "LoadCredential"
    "Environment"
    "StateDirectory"
    "StateDirectoryMode"
    "WorkingDirectory"
    "PrivateNetwork"
    "IPAddressDeny"
    "IPAddressAllow"
    "RestrictAddressFamilies"
  ];

  orderedKeys =
    attrs:
    let
      keys = attrNames attrs;
      first = filter (k: elem k keys) keyOrder;
      rest = sort (a: b: a < b) (filter (k: !(elem k keyOrder)) keys);
    in
    first ++ rest;

  showValue = v: if isBool v then (if v then "yes" else "no") else toString v;

  section =
    title: attrs:
    let
      lines = concatMap (
        k:
        let
          v = attrs.${k};
        in
        if isList v then map (x: "${k}=${showValue x}") v else [ "${k}=${showValue v}" ]
      ) (orderedKeys attrs);
    in
    if lines == [ ] then "" else "\n[${title}]\n${concatStringsSep "\n" lines}\n";

  header = ''
    # Generated from nixos-modules/units.nix by scripts/check-units.sh --update.
    # Do not edit; see deploy/systemd/README.md.
  '';

  render =
    kind: u:
    header
    + section "Unit" u.unit
    + section kind u.${if kind == "Socket" then "socket" else "service"}
    + section "Install" (
      { WantedBy = u.wantedBy or [ ]; } // (if u ? also then { Also = u.also; } else { })
    );

  forService =
    name:
    let
      credDir = "${credentialDir}/${name}";
      u = units.mkUnits (
        {
          inherit name;
          execStart = "${binDir}/todoapp-${name} --config ${configDir}/${name}.toml serve";
          credentials = listToAttrs (
            map (c: {
              name = c;
              value = "${credDir}/${c}";
            }) units.credentialNames.${name}
          );
        }
        // (
          if name == "gateway" then
            { }
          else
            {
              after = [ databaseUnit ];
              wants = [ databaseUnit ];
            }
        )
      );
    in
    [
      {
        name = "todoapp-${name}.socket";
        value = render "Socket" u.socket;
      }
      {
        name = "todoapp-${name}.service";
        value = render "Service" u.service;
      }
    ];

  sysusers =
    header
    + concatStringsSep "" (
      map (name: "u todoapp-${name} - \"todoapp ${name} service\" - -\n") units.services
    );
in
listToAttrs (concatMap forService units.services)
// {
  "todoapp.sysusers.conf" = sysusers;
}
