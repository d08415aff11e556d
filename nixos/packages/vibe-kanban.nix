# vibe-kanban 0.0.71: the linux-x64 executable inside the npm package
# (dist/linux-x64/vibe-kanban.zip), as the Debian flavor installs it
# (images/debian/build.sh). 0.1.x downloads at run time and cannot work offline.
# The hash is the npm registry's integrity of the tarball (checked against the
# copy in the rave-harness npm cache).
{
  stdenv,
  fetchurl,
  unzip,
  autoPatchelfHook,
  zlib,
}:
stdenv.mkDerivation {
  pname = "vibe-kanban";
  version = "0.0.71";

  src = fetchurl {
    url = "https://registry.npmjs.org/vibe-kanban/-/vibe-kanban-0.0.71.tgz";
    hash = "sha512-R2BuFlaD6K+CgA6wfRl5YT80jzaZkjO2CF9XS7zT4nSo+FRa3lmqtR5iTASabNK1sal+/POnCkuTlfiQInbf8A==";
  };

  nativeBuildInputs = [
    unzip
    autoPatchelfHook
  ];
  # The executable needs libc, libm, libz and libgcc_s.
  buildInputs = [
    zlib
    stdenv.cc.cc.lib
  ];

  dontConfigure = true;
  dontBuild = true;

  installPhase = ''
    runHook preInstall
    unzip -q dist/linux-x64/vibe-kanban.zip -d unpacked
    install -D -m 0755 unpacked/vibe-kanban $out/bin/vibe-kanban
    runHook postInstall
  '';

  meta = {
    description = "vibe-kanban (prebuilt linux-x64 executable from its npm package)";
    homepage = "https://github.com/BloopAI/vibe-kanban";
    mainProgram = "vibe-kanban";
    platforms = [ "x86_64-linux" ];
  };
}
