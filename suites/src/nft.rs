//! Reading nft's ruleset (`nft list ruleset`), for the firewall case.

/// The families (`inet`, `ip`, `ip6`, …) of the tables in `nft list ruleset`
/// output that hold a base chain on the input hook with policy drop.
pub fn input_drop_families(ruleset: &str) -> std::collections::BTreeSet<String> {
    let mut families = std::collections::BTreeSet::new();
    let mut family = None;
    for line in ruleset.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            family = rest.split_whitespace().next().map(str::to_string);
        } else if line.contains("hook input") && line.contains("policy drop") {
            if let Some(f) = &family {
                families.insert(f.clone());
            }
        }
    }
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_drop_in_ip_alone_leaves_ipv6_open() {
        let inet =
            "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n}\n";
        assert_eq!(input_drop_families(inet), ["inet".to_string()].into());
        let ip_only = inet.replace("table inet", "table ip");
        assert_eq!(input_drop_families(&ip_only), ["ip".to_string()].into());
        let both = format!("{ip_only}{}", inet.replace("table inet", "table ip6"));
        assert_eq!(input_drop_families(&both).len(), 2);
        let accept = inet.replace("policy drop", "policy accept");
        assert!(input_drop_families(&accept).is_empty());
    }
}
