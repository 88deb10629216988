//! The ReplaceTags plugin: in the patterns of the rules that `replace_rules` names,
//! `<NAME>` tags are filled from `replace_tag NAME …`, and `<pre P>`, `<inter I>` and
//! `<post Q>` markers put `replace_pre`, `replace_inter` and `replace_post` text before
//! each tag, between two adjacent tags and after each tag. It follows
//! `Plugin::ReplaceTags::finish_parsing_end` step by step, quirks included (the `pre`,
//! `post` and `inter` markers apply in the first pass only, and tags nested in a tag's
//! text are filled in up to five more passes), so the stock rules mean what they mean in
//! SpamAssassin.

use super::parse::Replace;

/// How many passes fill tags that a tag's own text holds, as in SpamAssassin.
const MAX_PASSES: usize = 6;

/// The pattern with its tags filled. `has_flags` says whether the rule had `i`, `m`,
/// `s` or `x`: SpamAssassin works on the stringified `qr//`, which then starts with
/// `(?i)` rather than with a tag, and that changes where an `inter` goes.
pub(crate) fn fill(pattern: &str, has_flags: bool, conf: &Replace) -> String {
    let mut re = pattern.to_owned();
    for _ in 0..MAX_PASSES {
        let pre = take_marker(&mut re, "pre").and_then(|n| non_empty(conf.pre.get(&n)));
        let post = take_marker(&mut re, "post").and_then(|n| non_empty(conf.post.get(&n)));
        let inter = take_marker(&mut re, "inter").and_then(|n| non_empty(conf.inter.get(&n)));
        let mut again = false;
        let mut out = String::with_capacity(re.len() * 2);
        for (i, segment) in split_tags(&re).into_iter().enumerate() {
            match segment {
                Segment::Text("") => {
                    // Perl's `split` keeps a leading empty field, and puts one between
                    // two adjacent tags; `inter` fills both.
                    if i > 0 || !has_flags {
                        if let Some(inter) = inter {
                            out.push_str(inter);
                        }
                    }
                }
                Segment::Text(text) => out.push_str(text),
                Segment::Tag(name) => {
                    if let Some(pre) = pre {
                        out.push_str(pre);
                    }
                    match non_empty(conf.tags.get(name)) {
                        Some(text) => {
                            again |= has_tag(text);
                            out.push_str(text);
                        }
                        None => {
                            out.push('<');
                            out.push_str(name);
                            out.push('>');
                        }
                    }
                    if let Some(post) = post {
                        out.push_str(post);
                    }
                }
            }
        }
        re = out;
        if !again {
            break;
        }
    }
    re
}

/// Perl's truthiness: an empty (or `"0"`) setting counts as unset.
fn non_empty(value: Option<&String>) -> Option<&str> {
    value
        .map(String::as_str)
        .filter(|v| !v.is_empty() && *v != "0")
}

/// Removes the first `<KIND NAME>` marker and returns NAME.
fn take_marker(re: &mut String, kind: &str) -> Option<String> {
    let open = format!("<{kind} ");
    let start = re.find(&open)?;
    let name_start = start + open.len();
    let len = re[name_start..].find('>')?;
    if len == 0 {
        return None;
    }
    let name = re[name_start..name_start + len].to_owned();
    re.replace_range(start..name_start + len + 1, "");
    Some(name)
}

enum Segment<'a> {
    Text(&'a str),
    /// A `<NAME>` tag: NAME has no `<` or `>`.
    Tag(&'a str),
}

/// Splits as Perl's `split(/(<[^<>]+>)/, $re)` does: text and tags alternate, an empty
/// text stands before a leading tag and between adjacent tags, and none trails.
fn split_tags(re: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut at = 0;
    while let Some(rel) = re[at..].find('<') {
        let open = at + rel;
        let inner = &re[open + 1..];
        match inner.find(['<', '>']) {
            Some(end) if end > 0 && inner.as_bytes()[end] == b'>' => {
                out.push(Segment::Text(&re[text_start..open]));
                out.push(Segment::Tag(&inner[..end]));
                at = open + 1 + end + 1;
                text_start = at;
            }
            _ => at = open + 1,
        }
    }
    if text_start < re.len() {
        out.push(Segment::Text(&re[text_start..]));
    }
    out
}

fn has_tag(text: &str) -> bool {
    split_tags(text)
        .iter()
        .any(|s| matches!(s, Segment::Tag(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> Replace {
        let mut conf = Replace::default();
        for (k, v) in [("A", "[a@]"), ("B", "[b8]"), ("AB", "<A><B>")] {
            conf.tags.insert(k.into(), v.into());
        }
        conf.inter.insert("W1".into(), "\\W?".into());
        conf.post.insert("P2".into(), "{1,2}".into());
        conf.pre.insert("L".into(), "\\b".into());
        conf
    }

    #[test]
    fn tags_fill_with_pre_inter_post() {
        let conf = conf();
        assert_eq!(fill("x<A>y", true, &conf), "x[a@]y");
        assert_eq!(fill("<inter W1>x<A><B>", true, &conf), "x[a@]\\W?[b8]");
        assert_eq!(fill("<post P2>x<A>", true, &conf), "x[a@]{1,2}");
        assert_eq!(fill("<pre L>x<A>", true, &conf), "x\\b[a@]");
        // Without flags the pattern starts with the tag, and Perl's leading empty field
        // takes an `inter` too.
        assert_eq!(fill("<inter W1><A><B>", false, &conf), "\\W?[a@]\\W?[b8]");
        // Nested tags fill in a later pass; unknown tags stay as written.
        assert_eq!(fill("<AB>", true, &conf), "[a@][b8]");
        assert_eq!(fill("<a href>", true, &conf), "<a href>");
        assert_eq!(fill("a<<b>", true, &conf), "a<<b>");
    }
}
