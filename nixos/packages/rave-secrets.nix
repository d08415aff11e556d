# The images' secrets, made once by a build (as images/debian/build.sh makes
# them per image): a test CA, nginx's certificate for rave.local signed by it,
# the GitLab webhook token, Grafana's secret key and admin password, and the
# age identity that decrypts them.
#
# Outputs, each its own store path, so an image's closure holds only `out`:
#   out      secrets.yaml: the sops file (values AES-GCM encrypted, data key age-encrypted)
#   ca       ca.pem: the test CA, exported in the image directory's manifest
#   identity age-identity.txt: handed to the guest at boot (fw_cfg), never on its disk
#
# The plaintext lives only in the build's temporary directory. The identity
# output is world-readable in the builder's /nix/store: fine for test images;
# a production deployment sets rave.secrets.* to its own sops file and keeps
# its identity elsewhere. The certificate is valid for 825 days from the build;
# bump `generation` to make new secrets.
{
  runCommand,
  openssl,
  age,
  sops,
  generation ? 1,
}:
runCommand "rave-secrets"
  {
    nativeBuildInputs = [
      openssl
      age
      sops
    ];
    outputs = [
      "out"
      "ca"
      "identity"
    ];
    inherit generation;
  }
  ''
    set -euo pipefail
    umask 077
    export HOME=$TMPDIR
    work=$(mktemp -d)
    cd "$work"

    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=rave test CA" -keyout ca.key -out ca.pem \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=rave.local" \
      -keyout tls-key -out tls.csr 2>/dev/null
    printf 'subjectAltName=DNS:rave.local\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >tls.ext
    openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile tls.ext -out tls-cert 2>/dev/null

    age-keygen -o age-identity.txt 2>/dev/null
    recipient=$(age-keygen -y age-identity.txt)

    webhook_secret=$(openssl rand -hex 32)
    indent() { sed 's/^/  /' "$1"; }
    {
      echo 'tls-cert: |'
      indent tls-cert
      echo 'tls-key: |'
      indent tls-key
      printf 'webhook-gitlab-secret: "%s"\n' "$webhook_secret"
      printf 'grafana-secret-key: "%s"\n' "$(openssl rand -hex 32)"
      printf 'grafana-admin-password: "%s"\n' "$(openssl rand -hex 24)"
    } >plain.yaml

    mkdir -p "$out" "$ca" "$identity"
    sops --encrypt --age "$recipient" --input-type yaml --output-type yaml plain.yaml >"$out/secrets.yaml"
    chmod 0444 "$out/secrets.yaml"

    # What the image holds must decrypt with the identity handed to it, and
    # must not hold the plaintext.
    extract() { SOPS_AGE_KEY_FILE=age-identity.txt sops --decrypt --extract "[\"$1\"]" "$out/secrets.yaml"; }
    [ "$(extract webhook-gitlab-secret)" = "$webhook_secret" ] || { echo "rave-secrets: webhook secret does not round-trip" >&2; exit 1; }
    extract tls-cert | openssl x509 -noout -checkend 86400 >/dev/null || { echo "rave-secrets: tls-cert does not round-trip" >&2; exit 1; }
    if grep -qF -- "$webhook_secret" "$out/secrets.yaml" || grep -qF -- "$(sed -n 2p tls-key)" "$out/secrets.yaml"; then
      echo "rave-secrets: plaintext in the sops file" >&2
      exit 1
    fi

    install -m 0444 ca.pem "$ca/ca.pem"
    install -m 0444 age-identity.txt "$identity/age-identity.txt"

    cd /
    rm -rf "$work"
  ''
