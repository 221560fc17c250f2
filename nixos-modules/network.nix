# How a backend reaches its database, derived from the database URL it
# actually uses, so that the sandbox matches it: a unix socket or SQLite
# needs no network (PrivateNetwork=), TCP needs the address families and
# the database's address in IPAddressAllow=.
#
# Builtins only: the NixOS module (./todoapp.nix) uses it, and
# scripts/check-nix.sh checks it without nixpkgs (vm-tests/network-eval.nix).
let
  # { kind = "sqlite" | "unix" | "tcp" | "unknown"; host = string or null; }
  # The todoapp services use a unix socket only when the URL says
  # `?socket=PATH`; `mysql://u@localhost/db` is TCP to localhost.
  parseDatabaseUrl =
    url:
    let
      sqlite = builtins.match "sqlite:.*" url;
      # scheme, authority, path, ?query, query, #fragment
      mysql = builtins.match "(mysql|mariadb)://([^/?#]*)([^?#]*)(\\?([^#]*))?(#.*)?" url;
      authority = builtins.elemAt mysql 1;
      query = builtins.elemAt mysql 4;
      # user:password@ ends at the last @ of the authority
      hostPort = builtins.elemAt (builtins.match "(.*@)?([^@]*)" authority) 1;
      bracketed = builtins.match "\\[([^]]*)](:[0-9]*)?" hostPort;
      plain = builtins.match "([^:]*)(:[0-9]*)?" hostPort;
      host =
        if bracketed != null then
          builtins.head bracketed
        else if plain != null then
          builtins.head plain
        else
          hostPort;
      viaSocket = query != null && builtins.match "(.*&)?socket=.*" query != null;
    in
    if sqlite != null then
      {
        kind = "sqlite";
        host = null;
      }
    else if mysql == null then
      {
        kind = "unknown";
        host = null;
      }
    else
      {
        kind = if viaSocket then "unix" else "tcp";
        inherit host;
      };

  isLoopback =
    host: host == "localhost" || host == "::1" || builtins.match "127\\.[0-9.]+" host != null;

  # An IPv4 or IPv6 address (IPAddressAllow= takes addresses, not names).
  isAddress =
    host:
    builtins.match "[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+" host != null
    || builtins.match ".*:.*" host != null;

  # Sandbox settings of backend `name` whose effective database URL is `url`.
  #   localDatabase     the module runs MariaDB on this host
  #   allowedAddresses  services.todoapp.database.allowedAddresses
  # Returns { privateNetwork; networkAllow; afterMysql; problems; } where
  # problems are messages for assertions.
  backendNetwork =
    {
      name,
      url,
      localDatabase,
      allowedAddresses,
    }:
    let
      db = parseDatabaseUrl url;
      tcp = db.kind == "tcp";
      loopback = tcp && isLoopback db.host;
      remoteAddress = tcp && !loopback && isAddress db.host;
      remoteName = tcp && !loopback && !isAddress db.host;
    in
    {
      privateNetwork = db.kind == "sqlite" || db.kind == "unix";
      # "localhost" is systemd's name for 127.0.0.0/8 and ::1.
      networkAllow = [
        "localhost"
      ]
      ++ allowedAddresses
      ++ (if remoteAddress && !builtins.elem db.host allowedAddresses then [ db.host ] else [ ]);
      afterMysql = localDatabase && (db.kind == "unix" || loopback);
      problems =
        if remoteName && allowedAddresses == [ ] then
          [
            "services.todoapp.${name}.database.url connects to ${db.host} over TCP, but services.todoapp.database.allowedAddresses is empty: the service may reach only the addresses listed there (IPAddressAllow= takes addresses, not names), so list the database host's IPv4 and IPv6 addresses."
          ]
        else
          [ ];
    };
in
{
  inherit parseDatabaseUrl isLoopback backendNetwork;
}
