# scripts/check-nix --deep (issue 17): how an option's value is forced.
#
# `force v`: v deeply, attribute sets and lists all the way down, derivations
# only to their .drvPath (which forces what they are made of).
#
# `forceAsDefined defs v`: v, the merged value of an option, forced along the
# paths the definitions `defs` (the raw values a module wrote: the rave
# modules' definitions) set, and deeply below them. Forcing a merged value
# whole would also force what nobody set: a submodule's aliases of removed
# options (they throw when read), options without a default that nobody
# defines (they throw "was accessed but has no value defined"), everything a
# real module adds. Reading the first attribute of a submodule value checks
# it whole for undeclared options, so a misspelt option is still caught.
{ lib }:
let
  isDrv = v: builtins.isAttrs v && (v.type or null) == "derivation";

  force =
    depth: v:
    if depth > 60 then
      true
    else if isDrv v then
      builtins.seq v.drvPath true
    else if builtins.isAttrs v then
      builtins.all (n: force (depth + 1) v.${n}) (builtins.attrNames v)
    else if builtins.isList v then
      builtins.all (force (depth + 1)) v
    else if builtins.isFunction v then
      true
    else
      builtins.seq v true;

  # The plain values of a definition: mkIf (when its condition holds), mkMerge,
  # mkOverride/mkDefault/mkForce and mkOrder/mkBefore/mkAfter unwrapped.
  plain =
    def:
    let
      t = if builtins.isAttrs def then def._type or null else null;
    in
    if t == "if" then
      (if def.condition then plain def.content else [ ])
    else if t == "merge" then
      builtins.concatMap plain def.contents
    else if t == "override" || t == "order" then
      plain def.content
    else
      [ def ];

  forceAsDefined =
    depth: defs: v:
    let
      raw = builtins.concatMap plain defs;
      sets = builtins.filter (d: builtins.isAttrs d && !(isDrv d) && !(d ? _type)) raw;
      lists = builtins.filter builtins.isList raw;
      keys = lib.unique (builtins.concatMap builtins.attrNames sets);
      # Definitions given as lists: the merged list holds their elements; when
      # these definitions are all there is, element i is defined by element i.
      rawElems = builtins.concatLists lists;
    in
    if depth > 60 then
      true
    else if raw == [ ] then
      true
    else if sets != [ ] && sets == raw && builtins.isAttrs v && !(isDrv v) then
      builtins.all (
        n: if v ? ${n} then forceAsDefined (depth + 1) (map (s: s.${n}) (builtins.filter (s: s ? ${n}) sets)) v.${n} else true
      ) keys
    else if lists != [ ] && lists == raw && builtins.isList v then
      (
        if builtins.length rawElems == builtins.length v then
          builtins.all (i: forceAsDefined (depth + 1) [ (builtins.elemAt rawElems i) ] (builtins.elemAt v i)) (
            lib.range 0 (builtins.length v - 1)
          )
        else
          force (depth + 1) v
      )
    else
      force depth v;
in
{
  force = force 0;
  forceAsDefined = forceAsDefined 0;
}
