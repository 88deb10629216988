//! `pampa list allow|block …` and `pampa addressbook …`: the allow and block lists and the
//! address books that the `whitelist` stage reads.
//!
//! Changes are plain SQL writes; the stage caches lookups for its `cache_ttl` (seconds),
//! so they take effect that soon without restarting anything.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use pampa_directory::{Address, Contact, Directory, ListEntry, ListKind, ListPattern};
use serde::Serialize;

use crate::{config::Config, table};

/// `pampa list …`: which list.
#[derive(Subcommand)]
pub enum ListCommand {
    /// Senders whose mail goes to the inbox, whatever its spam score.
    Allow {
        #[command(subcommand)]
        action: ListAction,
    },
    /// Senders whose mail is discarded (a block beats an allow).
    Block {
        #[command(subcommand)]
        action: ListAction,
    },
}

/// `pampa list allow|block …`: what to do with the list.
#[derive(Subcommand)]
pub enum ListAction {
    /// Add a pattern: an address (bob@example.net), a domain (example.net), or a domain
    /// with its subdomains (.example.net or *.example.net).
    Add {
        /// The user whose list it is; without it, the global list, which applies to
        /// every user.
        #[arg(long, value_name = "ADDR")]
        user: Option<String>,
        /// The pattern.
        pattern: String,
    },
    /// Remove a pattern.
    Remove {
        /// The user whose list it is; without it, the global list.
        #[arg(long, value_name = "ADDR")]
        user: Option<String>,
        /// The pattern, as it was added or as `show` prints it.
        pattern: String,
    },
    /// Show the global list, or with --user that user's entries and the global ones.
    Show {
        /// The user whose entries to show, next to the global ones.
        #[arg(long, value_name = "ADDR")]
        user: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `pampa addressbook …`: a user's address book. Its addresses count as allowed for
/// that user.
#[derive(Subcommand)]
pub enum AddressBookAction {
    /// Add one address.
    Add {
        /// The user whose address book it is.
        #[arg(long, value_name = "ADDR")]
        user: String,
        /// The address to add.
        address: String,
        /// The contact's name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Import a CSV file (a column named email, e-mail or address, or else the first
    /// column that holds an address; the header row is optional) or a vCard file
    /// (.vcf, any number of cards). All of it is added in one transaction.
    Import {
        /// The user whose address book it is.
        #[arg(long, value_name = "ADDR")]
        user: String,
        /// The CSV or vCard file.
        file: PathBuf,
    },
    /// Show the address book.
    Show {
        /// The user whose address book it is.
        #[arg(long, value_name = "ADDR")]
        user: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove one address.
    Remove {
        /// The user whose address book it is.
        #[arg(long, value_name = "ADDR")]
        user: String,
        /// The address to remove.
        address: String,
    },
}

async fn directory(config: &Config) -> Result<Directory> {
    Directory::connect(&config.db_url())
        .await
        .context("cannot open the directory database")
}

/// Parses a pattern here, before the directory does, to say what the accepted forms are.
fn pattern(text: &str) -> Result<ListPattern> {
    ListPattern::parse(text).map_err(|_| {
        anyhow::anyhow!(
            "invalid pattern {text:?}: use an address (bob@example.net), a domain \
             (example.net), or a domain with its subdomains (.example.net or *.example.net)"
        )
    })
}

/// "alice@example.org's allow list" or "the global allow list".
fn whose(user: Option<&str>, kind: ListKind) -> String {
    match user {
        Some(user) => format!("{}'s {kind} list", user.trim().to_ascii_lowercase()),
        None => format!("the global {kind} list"),
    }
}

/// One row of `list … show --json`.
#[derive(Serialize)]
struct EntryReport {
    pattern: String,
    kind: ListKind,
    /// `user` or `global`.
    scope: &'static str,
    /// The user, for a user's entry.
    owner: Option<String>,
    /// What the pattern covers: address, domain, or domain and subdomains.
    matches: &'static str,
    added: String,
}

fn added_at(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn report(entry: ListEntry) -> EntryReport {
    EntryReport {
        matches: entry.pattern.describe(),
        pattern: entry.pattern.to_string(),
        kind: entry.kind,
        scope: if entry.owner.is_some() {
            "user"
        } else {
            "global"
        },
        owner: entry.owner,
        added: added_at(entry.created_at),
    }
}

/// Runs `pampa list …`.
pub async fn list(config: &Config, command: ListCommand) -> Result<()> {
    let (kind, action) = match command {
        ListCommand::Allow { action } => (ListKind::Allow, action),
        ListCommand::Block { action } => (ListKind::Block, action),
    };
    let dir = directory(config).await?;
    match action {
        ListAction::Add {
            user,
            pattern: text,
        } => {
            let pattern = pattern(&text)?;
            let entry = dir
                .add_list_entry(user.as_deref(), kind, &pattern.to_string())
                .await?;
            println!(
                "Added {} ({}) to {}.",
                entry.pattern,
                entry.pattern.describe(),
                whose(entry.owner.as_deref(), kind)
            );
            // Both lists may hold a pattern; say which one wins so nobody is surprised.
            let other = match kind {
                ListKind::Allow => ListKind::Block,
                ListKind::Block => ListKind::Allow,
            };
            let clash = dir
                .list_entries(entry.owner.as_deref(), Some(other))
                .await?
                .into_iter()
                .any(|e| e.pattern == entry.pattern && e.owner == entry.owner);
            if clash {
                eprintln!(
                    "note: {} is also on {}; the block list wins.",
                    entry.pattern,
                    whose(entry.owner.as_deref(), other)
                );
            }
        }
        ListAction::Remove {
            user,
            pattern: text,
        } => {
            let pattern = pattern(&text)?;
            let removed = dir
                .remove_list_entry(user.as_deref(), kind, &pattern.to_string())
                .await?;
            if !removed {
                bail!("{pattern} is not on {}", whose(user.as_deref(), kind));
            }
            println!("Removed {pattern} from {}.", whose(user.as_deref(), kind));
        }
        ListAction::Show { user, json } => {
            let entries: Vec<EntryReport> = dir
                .list_entries(user.as_deref(), Some(kind))
                .await?
                .into_iter()
                .map(report)
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else if entries.is_empty() {
                match &user {
                    Some(user) => println!("No {kind} entries apply to {user}."),
                    None => println!("The global {kind} list is empty."),
                }
            } else {
                let rows: Vec<Vec<String>> = entries
                    .into_iter()
                    .map(|e| {
                        vec![
                            e.pattern,
                            e.matches.to_owned(),
                            e.owner.unwrap_or_else(|| "global".to_owned()),
                            e.added,
                        ]
                    })
                    .collect();
                table::print(&["PATTERN", "MATCHES", "LIST", "ADDED"], &rows);
            }
        }
    }
    Ok(())
}

/// Runs `pampa addressbook …`.
pub async fn addressbook(config: &Config, action: AddressBookAction) -> Result<()> {
    let dir = directory(config).await?;
    match action {
        AddressBookAction::Add {
            user,
            address,
            name,
        } => {
            let contact = dir
                .address_book_add(&user, &address, name.as_deref())
                .await?;
            println!(
                "Added {} to {}'s address book.",
                contact.address,
                user.trim().to_ascii_lowercase()
            );
        }
        AddressBookAction::Import { user, file } => import(&dir, &user, &file).await?,
        AddressBookAction::Show { user, json } => {
            let contacts = dir.address_book_list(&user).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&contacts)?);
            } else if contacts.is_empty() {
                println!("The address book of {user} is empty.");
            } else {
                let rows: Vec<Vec<String>> = contacts
                    .into_iter()
                    .map(|c| vec![c.address, c.name.unwrap_or_default()])
                    .collect();
                table::print(&["ADDRESS", "NAME"], &rows);
            }
        }
        AddressBookAction::Remove { user, address } => {
            if !dir.address_book_remove(&user, &address).await? {
                bail!("{address} is not in the address book of {user}");
            }
            println!("Removed {address} from {user}'s address book.");
        }
    }
    Ok(())
}

/// At most this many bad values are named one by one; the rest are counted.
const MAX_NAMED_PROBLEMS: usize = 20;

async fn import(dir: &Directory, user: &str, file: &Path) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let parsed = parse_contacts(&text, file)
        .with_context(|| format!("cannot read contacts from {}", file.display()))?;
    for (line, value) in parsed.invalid.iter().take(MAX_NAMED_PROBLEMS) {
        eprintln!(
            "{}:{line}: skipped {value:?}: not a valid address",
            file.display()
        );
    }
    if parsed.invalid.len() > MAX_NAMED_PROBLEMS {
        eprintln!(
            "… and {} more invalid addresses",
            parsed.invalid.len() - MAX_NAMED_PROBLEMS
        );
    }
    if parsed.contacts.is_empty() {
        bail!(
            "{} holds no valid address ({} invalid, {} entries without one): nothing imported",
            file.display(),
            parsed.invalid.len(),
            parsed.without_address
        );
    }
    let report = dir.address_book_import(user, &parsed.contacts).await?;
    let skipped = report.skipped + parsed.invalid.len() + parsed.without_address;
    println!(
        "Imported {} into {}'s address book: {} added, {skipped} skipped \
         ({} already there or repeated, {} invalid, {} without an address).",
        file.display(),
        user.trim().to_ascii_lowercase(),
        report.added,
        report.skipped,
        parsed.invalid.len(),
        parsed.without_address
    );
    Ok(())
}

/// What a contacts file held.
#[derive(Debug, Default, PartialEq)]
struct Parsed {
    /// Valid addresses, with names where the file had them.
    contacts: Vec<Contact>,
    /// (line, value) of values in an address column or `EMAIL` line that are not valid
    /// addresses.
    invalid: Vec<(usize, String)>,
    /// Rows or cards with no address at all (say, a contact with only a phone number).
    without_address: usize,
}

/// Reads a vCard file or a CSV file, told apart by content first (a `.csv` export can be
/// misnamed, a vCard cannot be mistaken for anything), then by extension.
fn parse_contacts(text: &str, file: &Path) -> Result<Parsed> {
    let text = text.trim_start_matches('\u{feff}');
    let starts_as_vcard = text
        .trim_start()
        .get(..11)
        .is_some_and(|head| head.eq_ignore_ascii_case("BEGIN:VCARD"));
    let vcard_extension = file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("vcf") || e.eq_ignore_ascii_case("vcard"));
    if starts_as_vcard || vcard_extension {
        Ok(parse_vcard(text))
    } else {
        parse_csv(text)
    }
}

/// The address in a cell or an `EMAIL` value: bare, `mailto:`, or `Name <addr>`.
fn extract_address(value: &str) -> Option<Address> {
    let value = value.trim();
    let value = match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value,
    };
    let value = value.trim();
    let value = value
        .get(..7)
        .filter(|head| head.eq_ignore_ascii_case("mailto:"))
        .map_or(value, |_| &value[7..]);
    Address::parse(value).ok()
}

/// A header cell reduced to lowercase letters and digits: `E-mail 1 - Value` →
/// `email1value`.
fn header_key(cell: &str) -> String {
    cell.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Address column names of common exports: plain `email`/`e-mail`/`address`, Outlook's
/// `E-mail Address`, Google's `E-mail 1 - Value`, Thunderbird's `Primary Email`.
const EMAIL_HEADERS: [&str; 7] = [
    "email",
    "emailaddress",
    "address",
    "mail",
    "email1value",
    "emailaddress1",
    "primaryemail",
];
const NAME_HEADERS: [&str; 4] = ["name", "displayname", "fullname", "fn"];
const FIRST_NAME_HEADERS: [&str; 2] = ["firstname", "givenname"];
const LAST_NAME_HEADERS: [&str; 3] = ["lastname", "familyname", "surname"];

/// Spreadsheets outside the English-speaking world save CSV with `;` (the comma is their
/// decimal separator), and some tools use tabs: take whichever of the three the first
/// line has most of.
fn sniff_delimiter(text: &str) -> u8 {
    let first = text.lines().next().unwrap_or("");
    [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| first.bytes().filter(|b| b == d).count())
        .filter(|d| first.as_bytes().contains(d))
        .unwrap_or(b',')
}

fn parse_csv(text: &str) -> Result<Parsed> {
    // The csv crate counts a CRLF line's end only when it reads the next record, so its
    // line numbers lag one behind in CRLF files; LF ends keep the messages' numbers right.
    let text = text.replace("\r\n", "\n");
    let text = text.as_str();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .delimiter(sniff_delimiter(text))
        .from_reader(text.as_bytes());
    let mut records = Vec::new();
    for record in reader.records() {
        let record = record.context("the CSV is malformed")?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        if record.iter().all(str::is_empty) {
            continue;
        }
        records.push((line, record));
    }
    let mut parsed = Parsed::default();
    let Some((_, first)) = records.first() else {
        return Ok(parsed);
    };
    // A first row without any address is a header row.
    let has_header = !first.iter().any(|cell| extract_address(cell).is_some());
    let keys: Vec<String> = if has_header {
        first.iter().map(header_key).collect()
    } else {
        Vec::new()
    };
    let column = |names: &[&str]| keys.iter().position(|k| names.contains(&k.as_str()));
    let email_column = column(&EMAIL_HEADERS);
    let name_column = column(&NAME_HEADERS);
    let first_name_column = column(&FIRST_NAME_HEADERS);
    let last_name_column = column(&LAST_NAME_HEADERS);
    let cell = |record: &csv::StringRecord, at: Option<usize>| {
        at.and_then(|i| record.get(i))
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
    };
    for (line, record) in records.iter().skip(usize::from(has_header)) {
        let name = cell(record, name_column).or_else(|| {
            let parts: Vec<String> = [first_name_column, last_name_column]
                .into_iter()
                .filter_map(|at| cell(record, at))
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        });
        match email_column {
            Some(at) => {
                let Some(value) = cell(record, Some(at)) else {
                    parsed.without_address += 1;
                    continue;
                };
                // Google puts several addresses in one cell, separated by " ::: ".
                for value in value.split(":::").map(str::trim) {
                    match extract_address(value) {
                        Some(address) => parsed
                            .contacts
                            .push(Contact::new(address.to_string(), name.clone())),
                        None => parsed.invalid.push((*line, value.to_owned())),
                    }
                }
            }
            None => {
                let found = record
                    .iter()
                    .enumerate()
                    .find_map(|(i, c)| extract_address(c).map(|a| (i, a)));
                let Some((at, address)) = found else {
                    parsed.without_address += 1;
                    continue;
                };
                // Without a header, a name is the first other non-empty cell, as in
                // `Carol Example,carol@example.com`.
                let name = name.or_else(|| {
                    (!has_header)
                        .then(|| {
                            record
                                .iter()
                                .enumerate()
                                .find(|(i, c)| *i != at && !c.is_empty())
                                .map(|(_, c)| c.to_owned())
                        })
                        .flatten()
                });
                parsed
                    .contacts
                    .push(Contact::new(address.to_string(), name));
            }
        }
    }
    Ok(parsed)
}

/// Undoes vCard text escaping (`\,` `\;` `\\` `\n`).
fn vcard_unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push(' '),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out.trim().to_owned()
}

/// One card being read.
#[derive(Default)]
struct Card {
    full_name: Option<String>,
    structured_name: Option<String>,
    emails: Vec<(usize, String)>,
}

impl Card {
    fn finish(self, parsed: &mut Parsed) {
        if self.emails.is_empty() {
            if self.full_name.is_some() || self.structured_name.is_some() {
                parsed.without_address += 1;
            }
            return;
        }
        let name = self.full_name.or(self.structured_name);
        for (line, value) in self.emails {
            match extract_address(&value) {
                Some(address) => parsed
                    .contacts
                    .push(Contact::new(address.to_string(), name.clone())),
                None => parsed.invalid.push((line, value)),
            }
        }
    }
}

/// Reads vCards (2.1, 3.0 and 4.0): `EMAIL` lines with their card's `FN` (or `N`) as the
/// name. Written by hand because only these two properties matter and a vCard line is
/// simple: unfold, split at the first colon, take the name before parameters and group.
fn parse_vcard(text: &str) -> Parsed {
    // Unfold: a line that starts with a space or tab continues the one before (RFC 6350
    // §3.2); keep the first physical line number of each for messages.
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        match (raw.strip_prefix([' ', '\t']), lines.last_mut()) {
            (Some(rest), Some((_, last))) => last.push_str(rest),
            _ => lines.push((i + 1, raw.to_owned())),
        }
    }
    let mut parsed = Parsed::default();
    let mut card = Card::default();
    for (line, content) in lines {
        let Some((head, value)) = content.split_once(':') else {
            continue;
        };
        let mut params = head.split(';');
        let name = params.next().unwrap_or("");
        // `item1.EMAIL` (Apple's groups): the property is after the last dot.
        let property = name.rsplit('.').next().unwrap_or(name).to_ascii_uppercase();
        let quoted_printable = params.any(|p| p.eq_ignore_ascii_case("ENCODING=QUOTED-PRINTABLE"));
        match property.as_str() {
            "BEGIN" => {
                std::mem::take(&mut card).finish(&mut parsed);
            }
            "END" => std::mem::take(&mut card).finish(&mut parsed),
            "EMAIL" => card.emails.push((line, value.trim().to_owned())),
            // A quoted-printable name (vCard 2.1) is left out rather than shown mangled:
            // the name is only for people reading the list.
            "FN" if !quoted_printable => {
                card.full_name = Some(vcard_unescape(value)).filter(|n| !n.is_empty());
            }
            "N" if !quoted_printable => {
                // Family;Given;Additional;Prefix;Suffix → "Given Family".
                let parts: Vec<&str> = value.split(';').collect();
                let given = parts.get(1).map(|s| vcard_unescape(s)).unwrap_or_default();
                let family = parts.first().map(|s| vcard_unescape(s)).unwrap_or_default();
                let joined = format!("{given} {family}").trim().to_owned();
                card.structured_name = Some(joined).filter(|n| !n.is_empty());
            }
            _ => {}
        }
    }
    card.finish(&mut parsed);
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contacts(parsed: &Parsed) -> Vec<(&str, Option<&str>)> {
        parsed
            .contacts
            .iter()
            .map(|c| (c.address.as_str(), c.name.as_deref()))
            .collect()
    }

    #[test]
    fn csv_with_a_named_column() {
        let text = "Name,E-mail,Phone\r\n\
                    Carol Example,Carol@Example.com,123\r\n\
                    \"Dave, Jr.\",dave@example.com,\r\n\
                    Nobody,,555\r\n\
                    Broken,not an address,\r\n";
        let parsed = parse_csv(text).unwrap();
        assert_eq!(
            contacts(&parsed),
            [
                ("carol@example.com", Some("Carol Example")),
                ("dave@example.com", Some("Dave, Jr."))
            ]
        );
        assert_eq!(parsed.invalid, [(5, "not an address".to_owned())]);
        assert_eq!(parsed.without_address, 1);
    }

    #[test]
    fn csv_exports_of_common_tools() {
        let google = "Given Name,Family Name,E-mail 1 - Type,E-mail 1 - Value\n\
                      Erin,Example,* Home,erin@example.com ::: erin@work.example\n";
        let parsed = parse_csv(google).unwrap();
        assert_eq!(
            contacts(&parsed),
            [
                ("erin@example.com", Some("Erin Example")),
                ("erin@work.example", Some("Erin Example"))
            ]
        );
        let semicolons = "Vorname;Nachname;E-Mail-Adresse\nFrank;Beispiel;frank@example.de\n";
        let parsed = parse_csv(semicolons).unwrap();
        assert_eq!(contacts(&parsed), [("frank@example.de", None)]);
    }

    #[test]
    fn csv_without_a_header_takes_the_first_address_cell() {
        let text = "Carol,carol@example.com\n\ndave@example.com\nGrace <grace@example.com>,x\nno address here,at all\n";
        let parsed = parse_csv(text).unwrap();
        assert_eq!(
            contacts(&parsed),
            [
                ("carol@example.com", Some("Carol")),
                ("dave@example.com", None),
                ("grace@example.com", Some("x"))
            ]
        );
        assert_eq!(parsed.without_address, 1);
        // A header with no address column: the first cell that holds one.
        let text = "who,contact\nHeidi,mailto:heidi@example.com\n";
        assert_eq!(
            contacts(&parse_csv(text).unwrap()),
            [("heidi@example.com", None)]
        );
    }

    #[test]
    fn vcards_folded_grouped_and_several() {
        let text = "BEGIN:VCARD\r\n\
                    VERSION:3.0\r\n\
                    FN:Carol\\, the \r\n  Example\r\n\
                    EMAIL;TYPE=INTERNET;TYPE=HOME:carol@exa\r\n mple.com\r\n\
                    item1.EMAIL;type=INTERNET:Carol@Work.example\r\n\
                    END:VCARD\r\n\
                    begin:vcard\r\n\
                    version:4.0\r\n\
                    n:Example;Dave;;;\r\n\
                    email:dave@example.com\r\n\
                    email:bad address\r\n\
                    end:vcard\r\n\
                    BEGIN:VCARD\r\n\
                    FN:Phone Only\r\n\
                    TEL:+1 555\r\n\
                    END:VCARD\r\n";
        let parsed = parse_vcard(text);
        assert_eq!(
            contacts(&parsed),
            [
                ("carol@example.com", Some("Carol, the  Example")),
                ("carol@work.example", Some("Carol, the  Example")),
                ("dave@example.com", Some("Dave Example")),
            ]
        );
        assert_eq!(parsed.invalid, [(13, "bad address".to_owned())]);
        assert_eq!(parsed.without_address, 1);
    }

    #[test]
    fn the_format_is_told_by_content_then_extension() {
        let vcard = "\u{feff}BEGIN:VCARD\nEMAIL:a@example.com\nEND:VCARD\n";
        let parsed = parse_contacts(vcard, Path::new("contacts.csv")).unwrap();
        assert_eq!(contacts(&parsed), [("a@example.com", None)]);
        let parsed = parse_contacts("EMAIL:b@example.com\n", Path::new("x.VCF")).unwrap();
        assert_eq!(contacts(&parsed), [("b@example.com", None)]);
        let parsed = parse_contacts("c@example.com\n", Path::new("x.txt")).unwrap();
        assert_eq!(contacts(&parsed), [("c@example.com", None)]);
    }

    #[test]
    fn patterns_are_explained() {
        let error = pattern("exa mple.net").unwrap_err().to_string();
        assert!(
            error.contains("\"exa mple.net\"") && error.contains(".example.net"),
            "{error}"
        );
    }
}
